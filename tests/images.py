"""Image files for the bad-input tests: 16-bit, EXIF-rotated, decompression bombs, corrupt ones.

Each helper returns encoded bytes, built in memory in milliseconds; the bombs are headers that
claim a huge image over a few bytes of data, so nothing large is ever allocated.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 (H, W, 3) or uint16 (H, W) array as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def gradient16(height: int = 32, width: int = 64) -> np.ndarray:
    """A full-range 16-bit horizontal gradient (0 to 65535): its 8-bit mean is 127.5."""
    row = np.linspace(0, 65535, width).round().astype(np.uint16)
    return np.broadcast_to(row, (height, width)).copy()


def upright() -> np.ndarray:
    """A 32x16 portrait image (height 32): red top half, blue bottom half."""
    img = np.zeros((32, 16, 3), dtype=np.uint8)
    img[:16, :, 0] = 255
    img[16:, :, 2] = 255
    return img


def exif_rotated(image: np.ndarray, fmt: str = "PNG") -> bytes:
    """``image`` stored sideways with EXIF Orientation 6 ("rotate 90 clockwise to view"), as a
    camera writes a portrait photo: every viewer shows ``image``."""
    stored = Image.fromarray(image).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, format=fmt, exif=exif)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def bomb_png(width: int = 15000, height: int = 15000) -> bytes:
    """A PNG header claiming ``width`` x ``height`` 8-bit gray pixels, with one row of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1))
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def truncated(data: bytes, keep: int = 80) -> bytes:
    """The first ``keep`` bytes of an encoded image."""
    return data[:keep]
