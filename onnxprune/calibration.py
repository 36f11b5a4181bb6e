"""Calibration inputs for post-training pruning: an ``.npz`` keyed by input name, or a folder
of images turned into the model's single image input by a :class:`Preprocess` spec.

Importing this module is cheap: numpy, onnx and Pillow are imported inside the functions.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnx

    from .config import PruneConfig

__all__ = [
    "IMAGE_EXTENSIONS",
    "PRESETS",
    "Preprocess",
    "calibration_feeds",
    "calibration_samples",
    "load_calibration",
    "parse_preprocess",
    "shared_samples",
    "split_calibration",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp")

_ORDERS = ("RGB", "BGR")
_LAYOUTS = ("NCHW", "NHWC")
_RESIZES = ("bilinear", "nearest")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes an input tensor: resize to ``size`` (height, width; None: the model
    input's static H, W), multiply by ``scale``, subtract ``mean`` and divide by ``std`` per
    channel (in ``channel_order``), then lay out as ``layout``. A ``mean``/``std`` of length 1,
    or whose entries are all equal, applies to any channel count."""

    size: tuple[int, int] | None = None
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    channel_order: str = "RGB"
    layout: str = "NCHW"
    resize: str = "bilinear"

    def __post_init__(self) -> None:
        def fix(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        if self.size is not None:
            try:
                size = tuple(operator.index(v) for v in self.size)
            except TypeError:
                size = ()
            if len(size) != 2 or min(size) <= 0:
                raise UsageError(f"preprocess: size must be two positive integers (height, width), got {self.size!r}")
            fix("size", size)
        if not math.isfinite(float(self.scale)) or float(self.scale) == 0:
            raise UsageError(f"preprocess: scale must be a finite non-zero number, got {self.scale!r}")
        fix("scale", float(self.scale))
        for name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, name))
            if not values or not all(math.isfinite(v) for v in values):
                raise UsageError(f"preprocess: {name} must be one or more finite numbers, got {getattr(self, name)!r}")
            fix(name, values)
        if any(v == 0 for v in self.std):
            raise UsageError(f"preprocess: std must be non-zero, got {self.std!r}")
        order, layout, resize = str(self.channel_order).upper(), str(self.layout).upper(), str(self.resize).lower()
        if order not in _ORDERS:
            raise UsageError(f"preprocess: channel order must be RGB or BGR, got {self.channel_order!r}")
        if layout not in _LAYOUTS:
            raise UsageError(f"preprocess: layout must be NCHW or NHWC, got {self.layout!r}")
        if resize not in _RESIZES:
            raise UsageError(f"preprocess: resize must be bilinear or nearest, got {self.resize!r}")
        fix("channel_order", order)
        fix("layout", layout)
        fix("resize", resize)


PRESETS: dict[str, Preprocess] = {
    "imagenet": Preprocess(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    "raw": Preprocess(scale=1.0),
}

_KEYS = ("size", "scale", "mean", "std", "order", "layout", "resize")
_ALIASES = {"channel_order": "order"}


def _number(key: str, text: str) -> float:
    """A float, or a fraction ``a/b`` (scale=1/255)."""
    try:
        if text.count("/") == 1:
            num, den = text.split("/")
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"preprocess: bad value for {key}: {text!r} (expected a number)") from None


def parse_preprocess(text: str) -> Preprocess:
    """Parse the CLI spec: a preset (``imagenet``, ``raw``) and/or comma-separated ``key=value``
    overrides, applied left to right: ``size=HxW`` (or ``N`` for NxN), ``scale=S`` (or ``a/b``),
    ``mean=a/b/c``, ``std=a/b/c``, ``order=RGB|BGR``, ``layout=NCHW|NHWC``,
    ``resize=bilinear|nearest``. An empty spec gives the defaults. Raises UsageError."""
    result = Preprocess()
    for token in (t.strip() for t in str(text).split(",")):
        if not token:
            continue
        if "=" not in token:
            preset = PRESETS.get(token.lower())
            if preset is None:
                raise UsageError(
                    f"preprocess: unknown preset {token!r} (expected {' or '.join(PRESETS)}, or key=value with keys {', '.join(_KEYS)})"
                )
            result = preset
            continue
        key, _, value = token.partition("=")
        key, value = key.strip().lower(), value.strip()
        key = _ALIASES.get(key, key)
        if key not in _KEYS:
            raise UsageError(f"preprocess: unknown key {key!r} (expected {', '.join(_KEYS)})")
        if not value:
            raise UsageError(f"preprocess: empty value for {key}")
        if key == "size":
            parts = value.lower().split("x")
            if len(parts) == 1:
                parts = parts * 2
            try:
                size = tuple(int(p) for p in parts)
            except ValueError:
                size = ()
            if len(size) != 2 or min(size) <= 0:
                raise UsageError(f"preprocess: bad value for size: {value!r} (expected HxW, e.g. 224x224)")
            result = replace(result, size=size)
        elif key == "scale":
            scale = _number(key, value)
            if not math.isfinite(scale) or scale == 0:
                raise UsageError(f"preprocess: bad value for scale: {value!r} (expected a finite non-zero number)")
            result = replace(result, scale=scale)
        elif key in ("mean", "std"):
            try:
                values = tuple(float(v) for v in value.split("/"))
            except ValueError:
                raise UsageError(
                    f"preprocess: bad value for {key}: {value!r} (expected numbers separated by /, e.g. 0.485/0.456/0.406)"
                ) from None
            if not all(math.isfinite(v) for v in values) or (key == "std" and any(v == 0 for v in values)):
                raise UsageError(
                    f"preprocess: bad value for {key}: {value!r} (expected finite{' non-zero' if key == 'std' else ''} numbers)"
                )
            result = replace(result, **{key: values})
        else:
            field, allowed = {
                "order": ("channel_order", _ORDERS),
                "layout": ("layout", _LAYOUTS),
                "resize": ("resize", _RESIZES),
            }[key]
            norm = value.lower() if key == "resize" else value.upper()
            if norm not in allowed:
                raise UsageError(f"preprocess: bad value for {key}: {value!r} (expected {' or '.join(allowed)})")
            result = replace(result, **{field: norm})
    return result


# -- loading -------------------------------------------------------------------------------


def load_calibration(
    source: str | os.PathLike[str],
    model: onnx.ModelProto,
    preprocess: Preprocess | None = None,
    limit: int = 256,
    seed: int = 0,
    model_source: str | None = None,
) -> list[dict[str, np.ndarray]]:
    """Calibration feeds, one sample per feed (leading batch dim of 1).

    ``source`` is an ``.npz`` file (arrays keyed by input name, first axis = samples; the first
    ``limit`` samples, ``preprocess`` ignored) or a folder of images (jpg, jpeg, png, bmp, ppm,
    pgm, webp; not recursive). Images are sorted by file name; when there are more than
    ``limit``, a seeded random subset of ``limit`` of them (``numpy.random.default_rng(seed)``,
    without replacement) is used, still in name order. Each image is decoded with Pillow,
    converted to RGB (L when the model input has 1 channel), resized, scaled and normalised by
    ``preprocess`` (default ``Preprocess()``), and laid out as the model's single image input
    expects. Raises UsageError naming the path on any problem.
    """
    path = os.fspath(source)
    if limit < 1:
        raise UsageError(f"{path}: calibration limit must be at least 1, got {limit}")
    from .verification_inputs import CALIBRATION_INPUTS, check_inputs_file

    check_inputs_file(path, CALIBRATION_INPUTS)
    if os.path.isdir(path):
        return _load_images(path, model, preprocess or Preprocess(), limit, seed)
    if path.lower().endswith(".npz"):
        from .verification_inputs import load_npz_inputs

        return load_npz_inputs(path, model, limit, source=model_source)
    raise UsageError(f"{path}: calibration inputs must be an .npz file or a folder of images")


def _image_files(folder: str) -> list[str]:
    names = sorted(
        n
        for n in os.listdir(folder)
        if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, n))
    )
    return [os.path.join(folder, n) for n in names]


def _load_images(
    folder: str, model: onnx.ModelProto, pre: Preprocess, limit: int, seed: int
) -> list[dict[str, np.ndarray]]:
    import numpy as np

    spec = _image_input(folder, model, pre)
    files = _image_files(folder)
    if not files:
        raise UsageError(f"{folder}: no images found (looked for {', '.join(e[1:] for e in IMAGE_EXTENSIONS)})")
    if len(files) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(files), size=limit, replace=False))
        files = [files[i] for i in keep]

    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - depends on the environment
        raise UsageError(f"{folder}: reading calibration images needs Pillow (pip install pillow)") from None

    name, channels, height, width, dtype = spec
    resample = Image.NEAREST if pre.resize == "nearest" else Image.BILINEAR
    mean = _per_channel(folder, "mean", pre.mean, channels)
    std = _per_channel(folder, "std", pre.std, channels)
    feeds = []
    for file in files:
        try:
            with Image.open(file) as im:
                im = im.convert("L" if channels == 1 else "RGB")
                if im.size != (width, height):
                    im = im.resize((width, height), resample)
                pixels = np.asarray(im, dtype=np.float64)
        except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, ValueError, ...
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise UsageError(f"{file}: cannot read image ({reason})") from None
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if channels == 3 and pre.channel_order == "BGR":
            pixels = pixels[:, :, ::-1]
        values = (pixels * pre.scale - mean) / std
        if pre.layout == "NCHW":
            values = values.transpose(2, 0, 1)
        feeds.append({name: np.ascontiguousarray(values[None], dtype=dtype)})
    return feeds


def _per_channel(folder: str, what: str, values: tuple[float, ...], channels: int) -> np.ndarray:
    import numpy as np

    if len(values) == channels:
        return np.asarray(values, np.float64)
    if len(set(values)) == 1:
        return np.full(channels, values[0], np.float64)
    raise UsageError(
        f"{folder}: preprocess {what} has {len(values)} values but the model input has {channels} channel(s)"
    )


def _image_input(folder: str, model: onnx.ModelProto, pre: Preprocess) -> tuple[str, int, int, int, type]:
    """(input name, channels, height, width, numpy dtype) of the model's single image input."""
    import numpy as np
    import onnx

    inits = {i.name for i in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    if len(inputs) != 1:
        names = ", ".join(vi.name for vi in inputs) or "none"
        raise UsageError(
            f"{folder}: a folder of images feeds one input but the model has {len(inputs)} ({names}); give an .npz keyed by input name"
        )
    vi = inputs[0]
    tt = vi.type.tensor_type
    dtypes = {
        onnx.TensorProto.FLOAT: np.float32,
        onnx.TensorProto.FLOAT16: np.float16,
        onnx.TensorProto.DOUBLE: np.float64,
    }
    if tt.elem_type not in dtypes:
        raise UsageError(
            f"{folder}: input {vi.name!r} is {onnx.TensorProto.DataType.Name(tt.elem_type)}, images give floats; give an .npz instead"
        )
    if not tt.HasField("shape") or len(tt.shape.dim) != 4:
        rank = len(tt.shape.dim) if tt.HasField("shape") else "unknown"
        raise UsageError(
            f"{folder}: input {vi.name!r} must be a rank-4 image tensor ({pre.layout}) but has rank {rank}"
        )
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
    n, c, h, w = dims if pre.layout == "NCHW" else (dims[0], dims[3], dims[1], dims[2])
    if n not in (None, 1):
        raise UsageError(
            f"{folder}: input {vi.name!r} has a fixed batch of {n}; images give one sample per feed, give an .npz instead"
        )
    channels = 3 if c is None else c
    if channels not in (1, 3):
        other = "NHWC" if pre.layout == "NCHW" else "NCHW"
        last = dims[3] if pre.layout == "NCHW" else dims[1]
        shown = "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
        hint = (
            f" (wrong layout? its shape {shown} looks {other}: give --preprocess layout={other}, with your other preprocess keys)"
            if last in (1, 3)
            else " (wrong layout?)"
        )
        raise UsageError(
            f"{folder}: input {vi.name!r} has {channels} channels in {pre.layout} layout; images give 1 (L) or 3 (RGB){hint}"
        )
    if pre.size is not None:
        height, width = pre.size
        if (h is not None and h != height) or (w is not None and w != width):
            raise UsageError(
                f"{folder}: preprocess size {height}x{width} does not match input {vi.name!r} of static size {h or '?'}x{w or '?'}"
            )
    elif h is None or w is None:
        raise UsageError(
            f"{folder}: input {vi.name!r} has a dynamic height or width; give size=HxW in the preprocessing spec"
        )
    else:
        height, width = h, w
    return vi.name, channels, height, width, dtypes[tt.elem_type]


def shared_samples(calibration: Sequence[dict], evaluation: Sequence[dict]) -> int:
    """How many of the ``evaluation`` samples are also ``calibration`` samples (same arrays)."""
    import hashlib

    import numpy as np

    def key(feed: dict) -> tuple:
        arrays = {k: np.asarray(v) for k, v in feed.items()}
        return tuple((k, a.dtype.str, a.shape, hashlib.sha256(a.tobytes()).digest()) for k, a in sorted(arrays.items()))

    seen = {key(f) for f in calibration}
    return sum(key(f) in seen for f in evaluation)


def split_calibration(feeds: Sequence[dict], evaluation: Sequence[dict] | None) -> tuple[list, list, str]:
    """(calibration feeds, evaluation feeds, note). With ``evaluation`` given, both are used as
    is and the note is empty. Otherwise one set is split deterministically: every 4th sample
    (index % 4 == 3) is for evaluation, the rest for calibration, at least one each when there
    are two or more; a single sample serves both."""
    feeds = list(feeds)
    if evaluation is not None:
        shared = shared_samples(feeds, evaluation)
        note = (
            f"{shared} of the {len(evaluation)} given evaluation samples are also calibration samples: "
            "their fidelity is not held out"
            if shared
            else ""
        )
        return feeds, list(evaluation), note
    if not feeds:
        raise UsageError("no calibration inputs to split")
    if len(feeds) == 1:
        return feeds, list(feeds), "calibration and evaluation inputs are the same sample (only 1 given)"
    calibration = [f for i, f in enumerate(feeds) if i % 4 != 3]
    held_out = [f for i, f in enumerate(feeds) if i % 4 == 3]
    if not held_out:
        calibration, held_out = feeds[:-1], feeds[-1:]
    note = (
        f"calibration and evaluation inputs come from one set, split 3:1 "
        f"({len(calibration)} calibration, {len(held_out)} evaluation)"
    )
    return calibration, held_out, note


def calibration_feeds(config: PruneConfig, model: onnx.ModelProto, source: str) -> list[dict[str, np.ndarray]]:
    """The calibration feeds a pruning run's ``config`` names: ``config.calibration`` read with
    its ``preprocess``, ``calibration_limit`` and ``seed``."""
    pre = parse_preprocess(config.preprocess) if config.preprocess else None
    return load_calibration(
        config.calibration,  # type: ignore[arg-type]  # the callers run only with calibration data
        model,
        pre,
        limit=config.calibration_limit,
        seed=config.seed,
        model_source=source,
    )


def calibration_samples(config: PruneConfig, model: onnx.ModelProto, source: str) -> tuple[list, list, str]:
    """A pruning run's (calibration feeds, evaluation feeds, note): ``split_calibration`` of its
    calibration feeds and, when given, its ``verification_inputs`` (read with the same limit)."""
    from .verification_inputs import load_npz_inputs

    feeds = calibration_feeds(config, model, source)
    given = (
        load_npz_inputs(config.verification_inputs, model, limit=config.calibration_limit, source=source)
        if config.verification_inputs
        else None
    )
    return split_calibration(feeds, given)
