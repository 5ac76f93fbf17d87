"""open_clip's evaluation preprocessing as a torch module on uint8 NHWC input.

open_clip preprocesses PIL images (resize, center crop or pad, ``ToTensor``, normalize). Running
that inside the model's forward is what lets one exported graph take raw uint8 images, so this
module reproduces it with tensor ops only.

Why not ``F.interpolate(..., antialias=True)`` directly: PIL resizes in two passes (width, then
height) and rounds to uint8 after each, which a single float interpolation does not (bicubic
overshoot on sharp edges then differs by up to ~25 levels), and the antialiased interpolate ops
have no ONNX export. So each axis's resampling is a small matrix built once per input size by
``F.interpolate(antialias=True)`` itself (PIL's kernels: a = -0.5 cubic, triangle), applied as a
matmul with PIL's rounding in between; crop and pad fold into the matrices. The graph is then
MatMul, Floor, Clip, Sub, Div: exportable anywhere, and equal to open_clip's PIL pipeline up to
one uint8 level on rare pixels (PIL uses fixed-point weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# open_clip's preprocessing keys (open_clip.transform.PreprocessCfg) that this module honours.
PREPROCESS_KEYS = ("size", "mean", "std", "interpolation", "resize_mode", "fill_color")


@dataclass(frozen=True)
class AxisPlan:
    """One axis: resize ``n_in`` -> ``n_resized``, pad (before, after), then crop ``n_out`` at
    ``start`` (all in the padded coordinates), exactly as open_clip's transforms do."""

    n_in: int
    n_resized: int
    pad_before: int
    start: int
    n_out: int


def _target_size(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = (int(s) for s in size)
    return h, w


def plan_resize(h: int, w: int, cfg: dict) -> tuple[AxisPlan, AxisPlan, str]:
    """The (height, width) plans and the interpolation open_clip's eval transform applies to an
    ``h`` x ``w`` image (``open_clip.transform.image_transform``, ``is_train=False``)."""
    th, tw = _target_size(cfg["size"])
    mode = cfg.get("resize_mode") or "shortest"
    # open_clip maps anything but "bilinear" (including "random") to bicubic at eval.
    interp = "bilinear" if cfg.get("interpolation") == "bilinear" else "bicubic"
    if mode == "squash":
        nh, nw = th, tw
    elif mode == "longest":  # ResizeKeepRatio(longest=1) then CenterCropOrPad
        ratio = max(h / th, w / tw)
        nh, nw = round(h / ratio), round(w / ratio)
    elif mode == "shortest":
        if th == tw:  # torchvision Resize(int): shorter edge -> size, longer truncated
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(th * long / short)
            nh, nw = (new_long, th) if w <= h else (th, new_long)
        else:  # ResizeKeepRatio(longest=0), which open_clip builds with its default bicubic
            ratio = min(h / th, w / tw)
            nh, nw = round(h / ratio), round(w / ratio)
            interp = "bicubic"
    else:
        raise ValueError(f"unknown resize_mode {mode!r}")
    return _axis(h, nh, th), _axis(w, nw, tw), interp


def _axis(n_in: int, n_resized: int, n_out: int) -> AxisPlan:
    # center_crop / center_crop_or_pad: pad (diff // 2 before) when smaller, then crop at
    # int(round((padded - out) / 2)).
    pad_before = (n_out - n_resized) // 2 if n_out > n_resized else 0
    padded = max(n_resized, n_out)
    return AxisPlan(n_in, n_resized, pad_before, round((padded - n_out) / 2.0), n_out)


def resample_matrix(plan: AxisPlan, interp: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_out, n_in) matrix doing resize + pad + crop on one axis, and the (n_out,) mask of
    padded positions. The weights come from torch's PIL-compatible antialiased kernels, by
    resampling each basis vector."""
    basis = torch.eye(plan.n_in, dtype=torch.float64).reshape(plan.n_in, 1, 1, plan.n_in)
    if plan.n_resized == plan.n_in:
        resized = torch.eye(plan.n_in, dtype=torch.float64)
    else:
        resized = F.interpolate(
            basis, size=(1, plan.n_resized), mode=interp, antialias=True, align_corners=False
        ).reshape(plan.n_in, plan.n_resized)
    src = torch.arange(plan.n_out) + plan.start - plan.pad_before  # index into the resized axis
    inside = (src >= 0) & (src < plan.n_resized)
    mat = torch.zeros(plan.n_out, plan.n_in, dtype=torch.float64)
    mat[inside] = resized.T[src[inside]]
    return mat.float(), (~inside).float()


class ClipPreprocess(torch.nn.Module):
    """uint8 (N, H, W, 3) RGB -> float32 (N, 3, size, size), normalized as the model declares.

    ``cfg`` is the model's open_clip preprocess config (``model.visual.preprocess_cfg``). The
    resampling matrices depend only on the input size; they are built on first use of a size.
    They are constants in a traced or exported graph only if that first use happens before
    tracing starts: traced cold, the graph would rebuild them on every run (NonZero, ScatterND
    and Slice on DOUBLE tensors). ``export.graph.export_onnx`` therefore runs the module once
    first; anything else that traces it must do the same.
    """

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.cfg = {k: cfg[k] for k in PREPROCESS_KEYS if k in cfg}
        self.cfg.setdefault("fill_color", 0)
        self.register_buffer(
            "mean", torch.tensor(cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        )
        self.register_buffer(
            "std", torch.tensor(cfg["std"], dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        )
        self._mats: dict[tuple[int, int, str], tuple[torch.Tensor, ...]] = {}

    @property
    def output_size(self) -> tuple[int, int]:
        return _target_size(self.cfg["size"])

    def _matrices(self, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        key = (h, w, str(device))
        if key not in self._mats:
            ph, pw, interp = plan_resize(h, w, self.cfg)
            mh, fill_h = resample_matrix(ph, interp)
            mw, fill_w = resample_matrix(pw, interp)
            fill = torch.maximum(fill_h[:, None], fill_w[None, :]) * float(self.cfg["fill_color"])
            self._mats[key] = (mh.to(device), mw.T.contiguous().to(device), fill.to(device))
        return self._mats[key]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(torch.float32)
        mh, mw_t, fill = self._matrices(int(x.shape[2]), int(x.shape[3]), x.device)
        # Always fp32, also when a backend runs the model under bf16/fp16 autocast: the
        # resampling reproduces PIL's uint8 rounding, which an 8-bit significand (bf16 holds
        # integers exactly only up to 256, and the weights to 3 digits) would not.
        with torch.autocast(x.device.type, enabled=False):
            # Width pass then height pass, rounding to uint8 after each, as PIL does.
            x = torch.clamp(torch.floor(torch.matmul(x, mw_t) + 0.5), 0.0, 255.0)
            x = torch.clamp(torch.floor(torch.matmul(mh, x) + 0.5), 0.0, 255.0)
            x = x + fill  # padded pixels are zero rows of the matrices; fill_color goes there
            return (x - self.mean) / self.std
