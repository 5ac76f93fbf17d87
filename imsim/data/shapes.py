"""``shapes``: a synthetic 100-class dataset, generated in memory and deterministic from a seed.

Each class is a combination of two independent factors, a shape (10) and a color (10), drawn with
per-image nuisance variation: position, scale, rotation, background color and gradient, a stripe
texture, lighting and noise. The 10 unseen classes (90-99) are held-out combinations in which
every shape and every color also occurs in seen classes, so a method can only score well on them
by learning shape and color as separate concepts, the way a method trained on 90 CIFAR-100
classes must transfer to 10 new ones. Among the unseen classes each shape and each color occurs
twice, so neither factor alone separates them.

Images are rendered from analytic shape boundaries with a one-pixel soft edge (anti-aliasing),
vectorized in numpy: a CIFAR-sized dataset (500 train + 100 test per class) takes seconds.
"""

from __future__ import annotations

import numpy as np

from imsim.data.types import ClassSplit, Dataset, Split

SHAPES = (
    "circle", "triangle", "square", "star", "cross",
    "ring", "crescent", "hexagon", "rhombus", "half_disc",
)
COLORS = (
    "red", "orange", "yellow", "lime", "green",
    "teal", "azure", "blue", "purple", "magenta",
)
# Held-out (shape, color) combinations: shapes 0-4 and colors 0-4, each exactly twice.
UNSEEN_COMBOS = ((0, 0), (0, 1), (1, 1), (1, 2), (2, 2), (2, 3), (3, 3), (3, 4), (4, 4), (4, 0))


def class_combos() -> list[tuple[int, int]]:
    """(shape, color) of each class index: the 90 seen combinations first, then the 10 unseen."""
    seen = [(s, c) for s in range(10) for c in range(10) if (s, c) not in UNSEEN_COMBOS]
    return seen + list(UNSEEN_COMBOS)


def class_names() -> list[str]:
    return [f"{COLORS[c]}_{SHAPES[s]}" for s, c in class_combos()]


def _soft(d: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Coverage of a pixel by the region d >= 0 (d in shape units, px = pixels per unit)."""
    return np.clip(d * px + 0.5, 0.0, 1.0)


def _polygon_radius(phi: np.ndarray, n: int, radii: tuple[float, ...]) -> np.ndarray:
    """Boundary radius at angle phi of a star-shaped polygon with n vertices at equal angles.

    Vertex k sits at angle 2*pi*k/n with radius radii[k % len(radii)]; the boundary between two
    vertices is the straight edge joining them.
    """
    step = 2 * np.pi / n
    k = np.floor(phi / step).astype(np.int64)
    a0 = k * step
    rr = np.asarray(radii, dtype=np.float32)
    ra = rr[k % len(rr)]
    rb = rr[(k + 1) % len(rr)]
    num = ra * rb * np.sin(step)
    den = ra * np.sin(phi - a0) + rb * np.sin(a0 + step - phi)
    return num / den


def _shape_mask(shape: int, x: np.ndarray, y: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Soft coverage mask of one shape in its own frame (unit circumradius)."""
    r = np.sqrt(x * x + y * y)
    phi = np.mod(np.arctan2(y, x), 2 * np.pi)
    name = SHAPES[shape]
    if name == "circle":
        return _soft(0.85 - r, px)
    if name == "triangle":
        return _soft(_polygon_radius(phi, 3, (1.0,)) - r, px)
    if name == "square":
        return _soft(_polygon_radius(phi, 4, (0.95,)) - r, px)
    if name == "star":
        return _soft(_polygon_radius(phi, 10, (1.0, 0.42)) - r, px)
    if name == "cross":
        arm_h = np.minimum(0.95 - np.abs(x), 0.3 - np.abs(y))
        arm_v = np.minimum(0.3 - np.abs(x), 0.95 - np.abs(y))
        return _soft(np.maximum(arm_h, arm_v), px)
    if name == "ring":
        return _soft(np.minimum(0.95 - r, r - 0.55), px)
    if name == "crescent":
        r2 = np.sqrt((x - 0.4) ** 2 + y * y)
        return _soft(np.minimum(0.9 - r, r2 - 0.7), px)
    if name == "hexagon":
        return _soft(_polygon_radius(phi, 6, (0.9,)) - r, px)
    if name == "rhombus":
        return _soft(_polygon_radius(phi, 4, (1.0, 0.5)) - r, px)
    if name == "half_disc":
        return _soft(np.minimum(0.95 - r, y + 0.05), px)
    raise ValueError(f"unknown shape {shape}")


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorized HSV (h in turns) to RGB in [0, 1]; shape (..., 3)."""
    h6 = np.mod(h, 1.0) * 6.0
    k = np.stack([np.mod(5 + h6, 6), np.mod(3 + h6, 6), np.mod(1 + h6, 6)], axis=-1)
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def render(
    shapes: np.ndarray, colors: np.ndarray, rng: np.random.Generator, size: int = 32
) -> np.ndarray:
    """Render one image per (shape, color) pair with random nuisances; returns uint8 (N, S, S, 3)."""
    n = len(shapes)
    f32 = np.float32
    theta = rng.uniform(0, 2 * np.pi, n).astype(f32)
    scale = rng.uniform(0.45, 0.8, n).astype(f32)
    tx, ty = (rng.uniform(-0.25, 0.25, (2, n)) * (1.0 - scale)).astype(f32) * 2
    fg_h = (colors / 10.0 + rng.uniform(-0.02, 0.02, n)).astype(f32)
    fg = _hsv_to_rgb(
        fg_h, rng.uniform(0.55, 1.0, n).astype(f32), rng.uniform(0.55, 1.0, n).astype(f32)
    )
    bg = _hsv_to_rgb(
        rng.uniform(0, 1, n).astype(f32), rng.uniform(0.0, 0.35, n).astype(f32),
        rng.uniform(0.15, 0.9, n).astype(f32),
    )
    grad_dir = rng.uniform(0, 2 * np.pi, n).astype(f32)
    grad_amp = rng.uniform(0.0, 0.2, n).astype(f32)
    stripe_dir = rng.uniform(0, np.pi, n).astype(f32)
    stripe_freq = rng.uniform(2.0, 6.0, n).astype(f32)
    stripe_amp = (rng.uniform(0.0, 0.4, n) * (rng.uniform(0, 1, n) < 0.5)).astype(f32)
    gain = rng.uniform(0.7, 1.2, n).astype(f32)
    noise_sd = rng.uniform(0.01, 0.06, n).astype(f32)

    g = (np.arange(size, dtype=f32) + 0.5) / size * 2 - 1
    gy, gx = np.meshgrid(g, g, indexing="ij")
    gx, gy = gx[None], gy[None]
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    dx, dy = gx - tx[:, None, None], gy - ty[:, None, None]
    sc = scale[:, None, None]
    x = (c * dx + s * dy) / sc
    y = (-s * dx + c * dy) / sc
    px = sc * size / 2

    mask = np.empty((n, size, size), dtype=f32)
    for sh in np.unique(shapes):
        sel = shapes == sh
        mask[sel] = _shape_mask(int(sh), x[sel], y[sel], px[sel])

    ramp = np.cos(grad_dir)[:, None, None] * gx + np.sin(grad_dir)[:, None, None] * gy
    bg_img = bg[:, None, None, :] * (1 + grad_amp[:, None, None, None] * ramp[..., None])
    phase = np.cos(stripe_dir)[:, None, None] * x + np.sin(stripe_dir)[:, None, None] * y
    stripes = 1 - stripe_amp[:, None, None] * (0.5 + 0.5 * np.sin(stripe_freq[:, None, None] * np.pi * phase))
    fg_img = fg[:, None, None, :] * stripes[..., None]
    img = mask[..., None] * fg_img + (1 - mask[..., None]) * bg_img
    img = img * gain[:, None, None, None]
    img = img + rng.standard_normal(img.shape, dtype=f32) * noise_sd[:, None, None, None]
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


_CHUNK = 1000  # images rendered per vectorized call: small enough to stay in cache (3x faster)


def _make_split(per_class: int, rng: np.random.Generator, size: int) -> Split:
    combos = np.asarray(class_combos())
    labels = np.repeat(np.arange(len(combos)), per_class)
    images = np.concatenate(
        [
            render(combos[labels[i : i + _CHUNK], 0], combos[labels[i : i + _CHUNK], 1], rng, size)
            for i in range(0, len(labels), _CHUNK)
        ]
    )
    return Split(images, labels)


def load_shapes(
    seed: int = 0, train_per_class: int = 500, test_per_class: int = 100, size: int = 32
) -> Dataset:
    """The ``shapes`` dataset: CIFAR-100-sized by default, classes 0-89 seen and 90-99 unseen.

The train split is rendered on first use: evaluation alone needs only the test split.
"""
    return Dataset(
        name="shapes",
        class_names=class_names(),
        train=lambda: _make_split(train_per_class, np.random.default_rng([seed, 0]), size),
        test=_make_split(test_per_class, np.random.default_rng([seed, 1]), size),
        split=ClassSplit(seen=tuple(range(90)), unseen=tuple(range(90, 100))),
        info={"source": "generated", "seed": seed, "train_per_class": train_per_class,
              "test_per_class": test_per_class, "size": size},
    )
