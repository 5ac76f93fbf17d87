"""The one decoding policy for image files: datasets, search galleries, uploads and thumbnails.

Every image that enters the toolkit as encoded bytes goes through ``open_rgb``, so a photo is
the same pixels whether it is part of an ImageFolder dataset, a search gallery, a query upload
or a thumbnail on the search page:

- the EXIF orientation is applied (``PIL.ImageOps.exif_transpose``): a portrait photo stored
  sideways with an orientation tag is embedded upright, as every viewer shows it;
- high-bit-depth pixels are scaled to 8 bits, not clipped: 16-bit integers (``I;16*``, and
  ``I`` whose values exceed 255) are divided by 257, floats in [0, 1] multiplied by 255;
  Pillow's own conversion clips them, which turns a full-range 16-bit gradient nearly white;
- transparency is composited on black (the color under a transparent pixel is undefined);
- the result is RGB;
- an image larger than ``max_pixels`` (default: Pillow's decompression-bomb limit) is refused
  from its header, before any pixel is decoded.

Failures raise ``ImageError`` (a ``UserError``) whose message names the file and says what is
wrong in one line, never Pillow's ``<_io.BytesIO object at 0x...>``; callers that read many
files skip such files and report them by name.
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imsim.errors import UserError

# The decompression-bomb limit is enforced here, from the header, with a message naming the
# file; Pillow's own warning (between 1x and 2x its limit) would only repeat it less clearly.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

DEFAULT_MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)
FORMATS = "JPEG, PNG, GIF, BMP, WebP, TIFF, ..."
_PIL_NAME = re.compile(r"<_io\.BytesIO object at 0x[0-9a-f]+>|<[^<>]* object at 0x[0-9a-f]+>")


class ImageError(UserError):
    """An image that cannot be used; ``str()`` is ``"NAME: reason"``."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class ImageTooLarge(ImageError):
    """An image over the pixel limit (a decompression bomb, or simply too big to accept)."""


def _reason(e: BaseException, name: str) -> str:
    """A decoder exception as a short reason, with Pillow's object reprs replaced by the name."""
    text = " ".join(_PIL_NAME.sub(name, str(e)).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _to_8bit(im: Image.Image) -> Image.Image:
    """High-bit-depth grayscale (``I;16*``, ``I``, ``F``) scaled to 8-bit ``L``."""
    a = np.asarray(im)
    if im.mode.startswith("I;16"):
        scale = 257.0
    elif im.mode == "F" and a.size and np.nanmax(a) <= 1.0:
        scale = 1.0 / 255.0
    else:  # 32-bit integers or floats: 16-bit data when above 255, else already 8-bit
        peak = float(np.nanmax(a)) if a.size else 0.0
        scale = 1.0 if peak <= 255 else (257.0 if peak <= 65535 else peak / 255.0)
    out = np.clip(np.rint(np.nan_to_num(a.astype(np.float64) / scale)), 0, 255)
    return Image.fromarray(out.astype(np.uint8), mode="L")


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode.startswith("I") or im.mode == "F":
        im = _to_8bit(im)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    ):
        # Composite on black rather than keeping the undefined color under transparent pixels.
        im = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im)
    return im.convert("RGB")


def open_rgb(data: bytes, name: str = "image", max_pixels: int | None = None) -> Image.Image:
    """Encoded image bytes -> an upright RGB ``PIL.Image`` under the policy above.

    ``name`` is what messages call the image (a path, a gallery key, "the upload").
    """
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    if not data:
        raise ImageError(name, "the file is empty")
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(name, f"over Pillow's decompression-bomb limit ({e})") from None
    except UnidentifiedImageError:
        raise ImageError(name, f"not an image in a format this toolkit reads ({FORMATS})") from None
    except Exception as e:  # untrusted bytes fail in many decoder ways
        raise ImageError(name, f"not a readable image ({_reason(e, name)})") from None
    with im:
        w, h = im.size
        if w * h > limit:
            raise ImageTooLarge(
                name, f"{w}x{h} = {w * h:,} pixels is over the limit of {limit:,} pixels"
            )
        if w < 1 or h < 1:
            raise ImageError(name, f"the image is {w}x{h} pixels")
        fmt = im.format or "image"
        try:
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
            return _to_rgb(im)
        except Image.DecompressionBombError as e:
            raise ImageTooLarge(name, f"over Pillow's decompression-bomb limit ({e})") from None
        except (OSError, SyntaxError, EOFError) as e:  # truncated or corrupt data
            raise ImageError(
                name, f"the {fmt} file is corrupt or truncated ({_reason(e, name)})"
            ) from None
        except Exception as e:  # unsupported modes, bad EXIF, decoder bugs
            raise ImageError(
                name, f"the {fmt} file cannot be decoded ({_reason(e, name)})"
            ) from None


def to_array(im: Image.Image, size: int | None) -> np.ndarray:
    """An RGB image as uint8 (size, size, 3), bicubic-resized unless it already is (or None)."""
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.BICUBIC)
    return np.asarray(im, dtype=np.uint8)


def decode_image(
    data: bytes, size: int, name: str = "image", max_pixels: int | None = None
) -> np.ndarray:
    """Bytes of any Pillow-readable image -> uint8 (size, size, 3) RGB, under one policy."""
    return to_array(open_rgb(data, name, max_pixels), size)
