"""Realistic inputs for the corpus models (../shared/corpus/CORPUS.md), made on this machine
without downloads: text lines, captchas, pages and table crops drawn with Pillow (the fonts
the machine has, else Pillow's built-in one), photos cut from scikit-learn's two bundled
images (china.jpg, flower.jpg: crops, flips, scales), byte images of local files, tones and
noise bursts. Each model's preprocessing follows CORPUS.md (channel order, layout, scale,
mean/std, size).

    from corpus_inputs import MODELS, feeds
    x = feeds("crnn_captcha_torch.onnx", 32, seed=1)   # {"image": float32 [32, 3, 60, 160]}

Tools-only dependencies: Pillow and scikit-learn (not needed by the package).
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from corpus_drawing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    _log_mel,
    audio_clip,
    captcha,
    file_bytes_image,
    page,
    photo,
    table_crop,
    text_line,
)
from PIL import Image

__all__ = [
    "MODELS",
    "ModelInputs",
    "audio_clip",
    "captcha",
    "feeds",
    "file_bytes_image",
    "page",
    "photo",
    "table_crop",
    "text_line",
]


def _chw(img: Image.Image, bgr: bool = False) -> np.ndarray:
    a = np.asarray(img.convert("RGB"), np.float32)
    return (a[..., ::-1] if bgr else a).transpose(2, 0, 1)


def _pad_to(img: Image.Image, side: int, fill=(255, 255, 255)) -> Image.Image:
    """Long side resized to ``side``, padded with ``fill`` (right/bottom) to a square."""
    s = side / max(img.size)
    img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.BILINEAR)
    out = Image.new("RGB", (side, side), fill)
    out.paste(img, (0, 0))
    return out


def _letterbox(img: Image.Image, side: int) -> Image.Image:
    """Ultralytics letterbox: keep aspect, centre on (114, 114, 114)."""
    s = side / max(img.size)
    img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.BILINEAR)
    out = Image.new("RGB", (side, side), (114, 114, 114))
    out.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return out


def _opennsfw(rng):
    a = np.asarray(photo(rng, (256, 256)), np.float32)[16:240, 16:240]  # resize 256, centre crop 224
    return {"input:0": a[..., ::-1] - np.array([104, 117, 123], np.float32)}  # BGR minus mean, NHWC


def _malimg(rng):
    a = np.asarray(file_bytes_image(rng), np.float32) / 255
    return {"input": ((a - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)}


def _pplcnet(rng):
    img = table_crop(rng).rotate(90 * int(rng.integers(4)), expand=True)  # the 4 orientations
    return {"input": _chw(_pad_to(img, 624)) / 255}


def _dbnet(rng):
    return {"input": _chw(_pad_to(table_crop(rng), 800)) / 255}


def _yolo(rng):
    w = int(rng.integers(400, 900))
    img = page(rng, (w, int(w * rng.uniform(1.2, 1.5))), isbn=True)
    return {"images": _chw(_letterbox(img, 640)) / 255}


def _imagenet_bgr(img: Image.Image) -> np.ndarray:
    a = np.asarray(img.convert("RGB"), np.float32)[..., ::-1] / 255
    # BGR image, the mean/std applied in the order the Paddle pipelines list them
    return ((a - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def _picodet(rng):
    w = int(rng.integers(500, 1000))
    img = page(rng, (w, int(w * rng.uniform(1.2, 1.5))))
    return {"image": _imagenet_bgr(img.resize((608, 800), Image.BILINEAR))}


def _ocr_det(rng):
    w = int(rng.integers(500, 1000))
    img = page(rng, (w, int(w * rng.uniform(1.2, 1.5))))
    s = 640 / max(img.size)  # max side 640 (the suggested static shape), padded to 640x640
    img = img.resize((round(img.width * s / 32) * 32 or 32, round(img.height * s / 32) * 32 or 32), Image.BILINEAR)
    canvas = Image.new("RGB", (640, 640), (0, 0, 0))
    canvas.paste(img, (0, 0))
    x = _imagenet_bgr(canvas)
    x[:, img.height :, :] = 0  # padding is zero after normalisation, as PaddleOCR pads
    x[:, :, img.width :] = 0
    return {"x": x}


def _ocr_rec(rng):
    img = text_line(rng)
    w = min(320, max(16, round(img.width * 48 / img.height)))
    x = np.zeros((3, 48, 320), np.float32)  # padded with 0 after normalisation, as PaddleOCR does
    x[:, :, :w] = (_chw(img.resize((w, 48), Image.BILINEAR), bgr=True) / 255 - 0.5) / 0.5
    return {"x": x}


def _crnn_captcha(rng):
    text = "".join(rng.choice(list(string.ascii_lowercase + string.digits), int(rng.integers(4, 7))))
    return {"image": _chw(captcha(rng, text, (160, 60)), bgr=True)}  # raw 0..255, BGR, CHW


def _basic_pitch(rng):
    return {"serving_default_input_2:0": audio_clip(rng, 43844, 22050)[:, None]}


def _oww(rng):
    audio = audio_clip(rng, 16000 * 76 // 100 + 400, 16000)
    return {"input_1": _log_mel(audio)[:76, :, None].astype(np.float32)}


def _vcb_captcha(rng):
    text = "".join(str(int(d)) for d in rng.integers(0, 10, 5))
    img = captcha(rng, text, (310, 100), colour=rng.random() < 0.5, noise=0.6).resize((155, 50), Image.LANCZOS)
    return {"input": np.asarray(img, np.float32) / 255}


def _silero(rng):
    audio = audio_clip(rng, 576, 16000)
    return {"input": audio, "sr": np.array(16000, np.int64), "state": np.zeros((2, 128), np.float32)}


@dataclass(frozen=True)
class ModelInputs:
    """How to feed one corpus model: one sample's feed (no batch axis) from a generator."""

    make: Callable[[np.random.Generator], dict[str, np.ndarray]]
    what: str  # the inputs, in a few words
    batch_axes: dict[str, int] | None = None  # input -> its batch axis (None: axis 0 of every input)


MODELS: dict[str, ModelInputs] = {
    "opennsfw_resnet50_tf2onnx_nhwc.onnx": ModelInputs(
        _opennsfw, "crops of china.jpg/flower.jpg, 256 -> centre 224, BGR - [104,117,123], NHWC"
    ),
    "resnet18_malimg_torchdynamo_extdata.onnx": ModelInputs(
        _malimg, "local executables/libraries as Malimg byte images, 224, /255, ImageNet mean/std, NCHW"
    ),
    "pplcnet_table_orient_cls_paddle.onnx": ModelInputs(
        _pplcnet, "rendered table crops rotated 0/90/180/270, long side 624, white pad, /255, NCHW"
    ),
    "dbnet_table_edge_paddle_convinteger.onnx": ModelInputs(
        _dbnet, "rendered table crops, long side 800, white pad, /255, NCHW"
    ),
    "yolo26n_isbn_det_torch.onnx": ModelInputs(
        _yolo, "rendered book pages with an ISBN barcode, letterboxed to 640 on (114,114,114), /255, RGB NCHW"
    ),
    "picodet_layout_cdla_paddle.onnx": ModelInputs(
        _picodet, "rendered pages (title, text, tables, figures), resized to 800x608, BGR, ImageNet mean/std"
    ),
    "ppocrv6_det_tiny_paddle.onnx": ModelInputs(
        _ocr_det, "rendered pages, max side 640 (multiples of 32), zero-padded to 640x640, BGR, ImageNet mean/std"
    ),
    "ppocrv6_rec_tiny_paddle_int8w.onnx": ModelInputs(
        _ocr_rec, "rendered text lines, height 48, width <= 320 zero-padded, BGR, (x/255-0.5)/0.5"
    ),
    "crnn_captcha_torch.onnx": ModelInputs(
        _crnn_captcha, "rendered 4-6 character captchas 160x60, BGR, raw 0..255, NCHW"
    ),
    "basic_pitch_nmp_tf2onnx.onnx": ModelInputs(
        _basic_pitch, "synthetic notes, chords, glides and noise bursts, 43844 samples at 22050 Hz"
    ),
    "oww_speech_embedding_tf2onnx_nhwc.onnx": ModelInputs(
        _oww,
        "log-mel (32 bands, 76 frames, numpy approximation of melspectrogram.onnx) of synthetic 16 kHz audio, x/10+2",
    ),
    "silero_vad_op18_torchdynamo_if.onnx": ModelInputs(
        _silero, "576-sample frames of synthetic 16 kHz audio, sr=16000, zero state", {"input": 0, "state": 1}
    ),
    "vcb_captcha_cnn_tf2onnx_nhwc.onnx": ModelInputs(
        _vcb_captcha, "rendered 5-digit captchas, LANCZOS to 155x50, RGB /255, NHWC"
    ),
}


def samples(model: str, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``n`` single-sample feeds (batch axis 1 on the batched inputs) for ``model`` (a corpus
    file name or path), reproducible from ``seed``."""
    axes = _axes(model)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        feed = MODELS[os.path.basename(model)].make(rng)
        out.append({k: (np.expand_dims(v, axes[k]) if k in axes else v) for k, v in feed.items()})
    return out


def _axes(model: str) -> dict[str, int]:
    spec = MODELS[os.path.basename(model)]
    if spec.batch_axes is not None:
        return spec.batch_axes
    return dict.fromkeys(spec.make(np.random.default_rng(0)), 0)


def feeds(model: str, n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` samples for ``model`` stacked on their batch axis (axis 0: an .npz for
    --calibration and --inputs); inputs without a batch axis (Silero's sr) are the first sample's."""
    axes = _axes(model)
    ss = samples(model, n, seed)
    return {k: (np.concatenate([s[k] for s in ss], axis=axes[k]) if k in axes else ss[0][k]) for k in ss[0]}


if __name__ == "__main__":  # python tools/corpus_inputs.py OUT_DIR: a PNG of a few samples per image model
    import sys

    out_dir = sys.argv[1] if len(sys.argv) > 1 else "."
    rng = np.random.default_rng(0)
    for name, make in (
        ("page", lambda: page(rng, (600, 800), isbn=True)),
        ("table", lambda: table_crop(rng)),
        ("line", lambda: text_line(rng)),
        ("captcha", lambda: captcha(rng, "a7k2x", (160, 60))),
        ("photo", lambda: photo(rng, (224, 224))),
        ("bytes", lambda: file_bytes_image(rng)),
    ):
        make().save(os.path.join(out_dir, f"{name}.png"))
