"""tools/glyph_task.py: the trained zoo's offline labelled images (numpy and Pillow, no torch)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import glyph_task  # noqa: E402


def test_images_depend_only_on_seed_index_and_size() -> None:
    x, y = glyph_task.glyph_images(6, seed=5, size=48)
    assert x.shape == (6, 3, 48, 48) and x.dtype == np.float32 and y.dtype == np.int64
    x2, y2 = glyph_task.glyph_images(3, seed=5, size=48)
    np.testing.assert_array_equal(x[:3], x2)  # image i is the same whatever n
    np.testing.assert_array_equal(y[:3], y2)
    _, y3 = glyph_task.glyph_images(6, seed=5, size=64)  # the same glyphs at another size
    np.testing.assert_array_equal(y, y3)
    x4, _ = glyph_task.glyph_images(6, seed=6, size=48)
    assert not np.array_equal(x, x4)


def test_labels_and_pixels_are_in_range() -> None:
    px, y = glyph_task.glyph_pixels(64, seed=1, size=32)
    assert px.dtype == np.uint8 and px.shape == (64, 32, 32, 3)
    assert y.min() >= 0 and y.max() < len(glyph_task.CLASSES) == 32
    assert len(set(y.tolist())) > 16  # 64 draws of 32 classes: many distinct
    assert px.std() > 20  # not a blank image
    # the normalised form is the pixels with ImageNet mean/std
    x, _ = glyph_task.glyph_images(2, seed=1, size=32)
    np.testing.assert_allclose(x[0, 0, 0, 0], (px[0, 0, 0, 0] / 255.0 - 0.485) / 0.229, rtol=0, atol=1e-6)
