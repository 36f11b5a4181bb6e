"""A labelled image task made offline: one printed glyph (24 capital letters and the digits 2-9,
32 classes) drawn on a crop of scikit-learn's two bundled photos, in one of the machine's fonts,
at a random size, rotation, shear and position, with clutter strokes, blur and noise.

tools/train_zoo.py trains torchvision classifiers on it (in /work/zoo-venv); the latency
benchmark makes its held-out images with the same function (numpy and Pillow only, no torch), at
seeds the training never uses (training draws its images at seeds from ``TRAIN_SEEDS_FROM``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from corpus_drawing import IMAGENET_MEAN, IMAGENET_STD, _font_file, _font_files, photo
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["CLASSES", "TRAIN_SEEDS_FROM", "glyph_image", "glyph_images", "glyph_pixels"]

# no I, O (l, 0), 0, 1: the classes differ by shape, not by a font's convention
CLASSES = tuple("ABCDEFGHJKLMNPQRSTUVWXYZ23456789")
TRAIN_SEEDS_FROM = 1_000_000  # training images' seeds; the benchmark's held-out seeds stay below
_MASK_PX = 128  # glyph masks are drawn once at this font size, then scaled by one affine transform


@lru_cache(maxsize=1)
def _fonts() -> tuple[str, ...]:
    return tuple(f for f in _font_files() if "ExtraLight" not in f)


@lru_cache(maxsize=2048)
def _mask(font: str, char: str) -> Image.Image:
    """The glyph's coverage (mode L), cropped tight."""
    f = _font_file(font, _MASK_PX)
    box = f.getbbox(char)
    img = Image.new("L", (box[2] - box[0] + 4, box[3] - box[1] + 4), 0)
    ImageDraw.Draw(img).text((2 - box[0], 2 - box[1]), char, font=f, fill=255)
    return img


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A photo crop (80%) or a noisy two-colour gradient, jittered in brightness and colour."""
    if rng.random() < 0.8:
        img = photo(rng, (size, size))
        a = np.asarray(img, np.float32)
        if rng.random() < 0.25:
            a = np.repeat(a.mean(axis=2, keepdims=True), 3, axis=2)
        a = a * rng.uniform(0.6, 1.3) + rng.uniform(-40, 40, 3)
    else:
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
        a = (c0 * (1 - t) + c1 * t) * np.ones((size, size, 3), np.float32)
        a = np.rot90(a, int(rng.integers(4))) + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _placed_mask(rng: np.random.Generator, mask: Image.Image, size: int) -> Image.Image:
    """``mask`` scaled to 35-75% of the image's height, rotated by up to 30 degrees, sheared,
    at a random position that keeps it inside (one bilinear affine resample)."""
    mw, mh = mask.size
    scale = size * rng.uniform(0.35, 0.75) / mh * rng.uniform(0.85, 1.15, 2)  # x, y
    theta, shear = math.radians(rng.uniform(-30, 30)), rng.uniform(-0.25, 0.25)
    cos, sin = math.cos(theta), math.sin(theta)
    # forward map (mask centre at 0): rotate(shear(scale(p)))
    fwd = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1, shear], [0, 1]]) @ np.diag(scale)
    corners = fwd @ (np.array([[-1, -1, 1, 1], [-1, 1, -1, 1]]) * [[mw / 2], [mh / 2]])
    half = np.abs(corners).max(axis=1)
    slack = np.maximum(size / 2 - half - 2, 0)
    centre = size / 2 + rng.uniform(-slack, slack)
    inv = np.linalg.inv(fwd)  # output pixel -> mask pixel
    off = np.array([mw / 2, mh / 2]) - inv @ centre
    data = (inv[0, 0], inv[0, 1], off[0], inv[1, 0], inv[1, 1], off[1])
    return mask.transform((size, size), Image.AFFINE, data, resample=Image.BILINEAR)


def glyph_image(rng: np.random.Generator, size: int = 224) -> tuple[Image.Image, int]:
    """One image (RGB, ``size`` square) and its class index in ``CLASSES``."""
    label = int(rng.integers(len(CLASSES)))
    fonts = _fonts()
    mask = _placed_mask(rng, _mask(fonts[int(rng.integers(len(fonts)))], CLASSES[label]), size)
    img = _background(rng, size)
    m = np.asarray(mask, np.float32)[..., None] / 255.0
    bg = np.asarray(img, np.float32)
    under = bg[m[..., 0] > 0.5].mean() if (m > 0.5).any() else bg.mean()
    light = under < 128 if rng.random() < 0.9 else under >= 128  # mostly contrasting ink
    base = rng.uniform(190, 255) if light else rng.uniform(0, 65)
    ink = np.clip(base + rng.uniform(-40, 40, 3), 0, 255)
    alpha = rng.uniform(0.65, 1.0)
    out = Image.fromarray(np.clip(bg * (1 - alpha * m) + ink * alpha * m, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(out)
    for _ in range(int(rng.integers(0, 4))):  # clutter strokes across the image
        p = rng.uniform(0, size, 4)
        d.line(
            list(p),
            fill=tuple(int(v) for v in rng.uniform(0, 255, 3)),
            width=max(1, int(size * rng.uniform(0.005, 0.03))),
        )
    if rng.random() < 0.5:
        out = out.filter(ImageFilter.GaussianBlur(size * rng.uniform(0.0, 0.008)))
    a = np.asarray(out, np.float32) + rng.normal(0, rng.uniform(0, 14), (size, size, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)), label


def glyph_pixels(n: int, seed: int, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (uint8 NHWC) and their labels (int64). Image ``i`` depends only on
    ``(seed, i)`` and ``size`` (the same glyph, placement and background at every size)."""
    x = np.empty((n, size, size, 3), np.uint8)
    y = np.empty(n, np.int64)
    for i in range(n):
        img, y[i] = glyph_image(np.random.default_rng([seed, i]), size)
        x[i] = np.asarray(img)
    return x, y


def glyph_images(n: int, seed: int, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """``glyph_pixels`` as the classifiers' input: float32 NCHW, ImageNet mean/std."""
    px, y = glyph_pixels(n, seed, size)
    return ((px.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2).copy(), y
