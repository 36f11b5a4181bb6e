"""What the corpus inputs are drawn from, made on this machine without downloads: text lines,
captchas, pages and table crops drawn with Pillow (the fonts the machine has, else Pillow's
built-in one), photos cut from scikit-learn's two bundled images, byte images of local files,
tones and noise bursts, and an approximate log-mel. corpus_inputs.py turns them into each
model's inputs.
"""

from __future__ import annotations

import glob
import os
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = ["audio_clip", "captcha", "file_bytes_image", "page", "photo", "table_crop", "text_line"]


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
WORDS = (
    "the of and to in is for that with on as by this from are be at an it or which was not "
    "model table figure results data method layer network input output training test page "
    "section value report analysis system price total number date name address invoice order "
    "chapter book library edition press university science learning image text detection "
    "summary introduction conclusion appendix revenue quarter growth market customer account"
).split()


# -- building blocks -------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _font_files() -> tuple[str, ...]:
    found = sorted(glob.glob("/usr/share/fonts/**/*.ttf", recursive=True))
    return tuple(f for f in found if "MathTeX" not in f)


@lru_cache(maxsize=64)
def _font_file(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _font(rng: np.random.Generator, size: int, mono: bool = False) -> ImageFont.ImageFont:
    files = [f for f in _font_files() if ("Mono" in f) == mono] or list(_font_files())
    if not files:
        return ImageFont.load_default(size=size)
    return _font_file(files[int(rng.integers(len(files)))], int(size))


def _words(rng: np.random.Generator, n: int) -> str:
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.1:
            out.append(str(int(rng.integers(1, 10000))))
        elif r < 0.2:
            out.append(WORDS[int(rng.integers(len(WORDS)))].capitalize())
        else:
            out.append(WORDS[int(rng.integers(len(WORDS)))])
    return " ".join(out)


def _ink(rng: np.random.Generator) -> tuple[int, int, int]:
    v = int(rng.integers(0, 70))
    return (v + int(rng.integers(0, 20)), v, v + int(rng.integers(0, 30)))


def _paper(rng: np.random.Generator) -> tuple[int, int, int]:
    v = int(rng.integers(215, 256))
    return (v, v - int(rng.integers(0, 12)), v - int(rng.integers(0, 25)))


def text_line(rng: np.random.Generator, height: int = 48) -> Image.Image:
    """A cropped line of printed text (a few words), tight around the text like a detector's crop."""
    font = _font(rng, int(height * rng.uniform(0.55, 0.8)))
    text = _words(rng, int(rng.integers(1, 6)))
    box = font.getbbox(text)
    pad = int(rng.integers(2, 8))
    w, h = box[2] - box[0] + 2 * pad, box[3] - box[1] + 2 * pad
    img = Image.new("RGB", (w, h), _paper(rng))
    ImageDraw.Draw(img).text((pad - box[0], pad - box[1]), text, font=font, fill=_ink(rng))
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.8)))
    return img


def captcha(
    rng: np.random.Generator, text: str, size: tuple[int, int], colour: bool = True, noise: float = 1.0
) -> Image.Image:
    """A captcha: jittered characters in several fonts and colours, interference lines and dots."""
    w, h = size
    bg = tuple(int(v) for v in rng.integers(180, 256, 3)) if colour else (255, 255, 255)
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    step = w / (len(text) + 1)
    for i, ch in enumerate(text):
        font = _font(rng, int(h * rng.uniform(0.55, 0.8)))
        layer = Image.new("L", (h, h), 0)
        ImageDraw.Draw(layer).text((h * 0.15, h * 0.05), ch, font=font, fill=255)
        layer = layer.rotate(float(rng.uniform(-25, 25)), resample=Image.BILINEAR)
        fill = tuple(int(v) for v in rng.integers(0, 120, 3)) if colour else (20, 20, 20)
        x = int(step * (i + 0.5) + rng.uniform(-3, 3))
        y = int(rng.uniform(-0.1, 0.15) * h)
        img.paste(Image.new("RGB", layer.size, fill), (x - int(h * 0.1), y), layer)
    for _ in range(int(rng.integers(2, 6) * noise)):
        pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(2)]
        d.line(pts, fill=tuple(int(v) for v in rng.integers(0, 200, 3)), width=int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(50, 200) * noise)):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        d.point((x, y), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img.filter(ImageFilter.SMOOTH) if rng.random() < 0.5 else img


def _paragraph(d: ImageDraw.ImageDraw, rng, box, size: int) -> None:
    x0, y0, x1, y1 = box
    font = _font(rng, size)
    y = y0
    while y + size < y1:
        line = _words(rng, int(rng.integers(4, 14)))
        while font.getlength(line) > x1 - x0 and " " in line:
            line = line.rsplit(" ", 1)[0]
        d.text((x0, y), line, font=font, fill=_ink(rng))
        y += int(size * rng.uniform(1.3, 1.7))


def _table(d: ImageDraw.ImageDraw, rng, box, size: int, lines: bool = True) -> None:
    x0, y0, x1, y1 = box
    rows, cols = int(rng.integers(3, 9)), int(rng.integers(2, 6))
    font = _font(rng, size)
    xs = np.linspace(x0, x1, cols + 1).astype(int)
    ys = np.linspace(y0, y1, rows + 1).astype(int)
    ink = _ink(rng)
    if lines:
        for x in xs:
            d.line([(x, y0), (x, y1)], fill=ink, width=1)
        for y in ys:
            d.line([(x0, y), (x1, y)], fill=ink, width=1)
    else:
        for y in (ys[0], ys[1], ys[-1]):
            d.line([(x0, y), (x1, y)], fill=ink, width=2)
    for r in range(rows):
        for c in range(cols):
            if r == 0:
                cell = WORDS[int(rng.integers(len(WORDS)))].capitalize()
            elif c == 0:
                cell = _words(rng, 1)
            else:
                cell = f"{rng.uniform(0, 1000):.{int(rng.integers(0, 3))}f}"
            while font.getlength(cell) > xs[c + 1] - xs[c] - 4 and len(cell) > 1:
                cell = cell[:-1]
            d.text((xs[c] + 3, ys[r] + max(1, (ys[r + 1] - ys[r] - size) // 2)), cell, font=font, fill=ink)


def _figure(d: ImageDraw.ImageDraw, rng, box) -> None:
    x0, y0, x1, y1 = box
    d.rectangle(box, outline=(80, 80, 80))
    kind = rng.integers(3)
    if kind == 0:  # bar chart
        n = int(rng.integers(3, 10))
        bw = (x1 - x0) / (n * 1.5 + 0.5)
        for i in range(n):
            top = y1 - (y1 - y0) * rng.uniform(0.1, 0.9)
            colour = tuple(int(v) for v in rng.integers(0, 200, 3))
            d.rectangle([x0 + bw * (0.5 + 1.5 * i), top, x0 + bw * (1.5 + 1.5 * i), y1 - 1], fill=colour)
    elif kind == 1:  # line plot
        xs = np.linspace(x0 + 5, x1 - 5, 20)
        ys = y0 + (y1 - y0) * (0.5 + 0.35 * np.sin(np.linspace(0, rng.uniform(2, 9), 20) + rng.uniform(0, 6)))
        d.line(list(zip(xs.tolist(), ys.tolist())), fill=tuple(int(v) for v in rng.integers(0, 200, 3)), width=2)
    else:  # a photo
        ph = photo(rng, (max(8, x1 - x0 - 2), max(8, y1 - y0 - 2)))
        d._image.paste(ph, (x0 + 1, y0 + 1))


def _barcode(d: ImageDraw.ImageDraw, rng, x: int, y: int, w: int, h: int) -> None:
    """An EAN-13-looking barcode with 'ISBN 978-...' above it."""
    font = _font(rng, max(8, h // 6))
    digits = "978" + "".join(str(int(v)) for v in rng.integers(0, 10, 10))
    d.rectangle([x - 6, y - h // 4 - 6, x + w + 6, y + h + h // 6], fill=(255, 255, 255))
    d.text(
        (x, y - h // 4),
        f"ISBN {digits[:3]}-{digits[3]}-{digits[4:8]}-{digits[8:12]}-{digits[12]}",
        font=font,
        fill=(0, 0, 0),
    )
    bars = rng.integers(0, 2, 95)
    bars[[0, 2, 46, 48, 92, 94]] = 1
    bw = w / 95
    for i, b in enumerate(bars):
        if b:
            d.rectangle([x + i * bw, y, x + (i + 1) * bw - 0.5, y + h * 0.85], fill=(0, 0, 0))
    d.text((x, y + int(h * 0.86)), digits, font=font, fill=(0, 0, 0))


def page(rng: np.random.Generator, size: tuple[int, int], isbn: bool = False) -> Image.Image:
    """A document page (width, height): a title, paragraphs in one or two columns, a ruled or
    open table, a figure; with ``isbn`` a book's copyright page or back cover with an ISBN barcode."""
    w, h = size
    img = Image.new("RGB", (w, h), _paper(rng))
    d = ImageDraw.Draw(img)
    m = int(w * rng.uniform(0.05, 0.1))
    body = max(9, int(h * rng.uniform(0.014, 0.024)))
    y = m
    title = _font(rng, int(body * rng.uniform(1.6, 2.4)))
    d.text((m, y), _words(rng, int(rng.integers(2, 6))).title(), font=title, fill=_ink(rng))
    y += int(body * 3.5)
    cols = 1 if rng.random() < 0.5 else 2
    colw = (w - 2 * m - (cols - 1) * m // 2) // cols
    blocks = ["text", "table", "figure", "text"]
    rng.shuffle(blocks)
    for c in range(cols):
        yc = y
        x0 = m + c * (colw + m // 2)
        for block in blocks[c::cols] if cols == 2 else blocks:
            bh = int((h - y - m) / (len(blocks) / cols) * rng.uniform(0.6, 0.95))
            if bh < 3 * body:
                break
            box = (x0, yc, x0 + colw, yc + bh)
            if block == "text":
                _paragraph(d, rng, box, body)
            elif block == "table":
                _table(d, rng, box, body, lines=rng.random() < 0.6)
            else:
                _figure(d, rng, box)
                d.text((x0, yc + bh + 2), "Figure " + _words(rng, 4), font=_font(rng, body), fill=_ink(rng))
            yc += bh + int(body * 1.8)
    if isbn:
        bw = int(w * rng.uniform(0.25, 0.4))
        bx, by = int(rng.uniform(m, w - m - bw)), int(rng.uniform(h * 0.55, h - m - bw * 0.5))
        _barcode(d, rng, bx, by, bw, int(bw * 0.45))
    if rng.random() < 0.5:
        img = img.rotate(float(rng.uniform(-2, 2)), resample=Image.BILINEAR, fillcolor=_paper(rng))
    return img


def table_crop(rng: np.random.Generator) -> Image.Image:
    """A cropped table (a header row and numeric cells), as a table detector would cut it out."""
    w, h = int(rng.integers(300, 900)), int(rng.integers(160, 700))
    img = Image.new("RGB", (w, h), _paper(rng))
    d = ImageDraw.Draw(img)
    _table(d, rng, (4, 4, w - 5, h - 5), max(10, int(h / rng.uniform(14, 28))), lines=rng.random() < 0.7)
    return img


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(load_sample_images().images)


def photo(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A crop of china.jpg or flower.jpg (random scale 0.35-1 of the short side, position,
    horizontal flip), resized to ``size`` (width, height)."""
    src = _photos()[int(rng.integers(2))]
    h, w = src.shape[:2]
    s = int(min(h, w) * rng.uniform(0.35, 1.0))
    aspect = size[0] / size[1]
    cw, ch = min(w, int(s * aspect)), s
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = src[y : y + ch, x : x + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return Image.fromarray(np.ascontiguousarray(crop)).resize(size, Image.BILINEAR)


@lru_cache(maxsize=1)
def _binaries() -> tuple[str, ...]:
    found = []
    for pattern in ("/usr/bin/*", "/usr/lib/x86_64-linux-gnu/*.so*", "/usr/lib/aarch64-linux-gnu/*.so*"):
        for f in sorted(glob.glob(pattern)):
            try:
                if os.path.isfile(f) and not os.path.islink(f) and 20_000 < os.path.getsize(f) < 8_000_000:
                    found.append(f)
            except OSError:
                continue
    return tuple(found)


def file_bytes_image(rng: np.random.Generator, size: int = 224) -> Image.Image:
    """A local executable or library drawn as a greyscale byte image (the Malimg convention:
    the row width grows with the file size), resized to ``size`` square."""
    files = _binaries()
    with open(files[int(rng.integers(len(files)))], "rb") as f:
        data = np.frombuffer(f.read(), np.uint8)
    kb = len(data) / 1024
    width = (
        32
        if kb < 10
        else 64
        if kb < 30
        else 128
        if kb < 60
        else 256
        if kb < 100
        else 384
        if kb < 200
        else 512
        if kb < 500
        else 768
        if kb < 1000
        else 1024
    )
    rows = len(data) // width
    return (
        Image.fromarray(data[: rows * width].reshape(rows, width)).convert("RGB").resize((size, size), Image.BILINEAR)
    )


def audio_clip(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """``n`` samples at ``sr`` Hz in [-1, 1]: a few notes (harmonic tones with attack/decay
    envelopes, sometimes a chord or a glide), noise bursts and background noise."""
    t = np.arange(n) / sr
    out = np.zeros(n)
    for _ in range(int(rng.integers(1, 6))):
        start, length = rng.uniform(0, t[-1] * 0.8), rng.uniform(min(0.1, t[-1] / 2), t[-1])
        env = np.clip((t - start) / 0.01, 0, 1) * np.exp(-np.clip(t - start, 0, None) * rng.uniform(1, 8))
        env *= t < start + length
        for note in rng.integers(45, 90, int(rng.integers(1, 4))):  # MIDI notes of a chord
            f0 = 440.0 * 2 ** ((note - 69) / 12)
            glide = 1 + (rng.uniform(-0.05, 0.05) * t if rng.random() < 0.2 else 0)
            for k in range(1, 6):
                if f0 * k < sr / 2:
                    out += env * rng.uniform(0.1, 0.4) / k * np.sin(2 * np.pi * f0 * k * glide * t + rng.uniform(0, 6))
    for _ in range(int(rng.integers(0, 3))):  # noise bursts
        start = int(rng.integers(0, n))
        length = int(rng.integers(sr // 50, sr // 4))
        out[start : start + length] += rng.uniform(0.05, 0.3) * rng.standard_normal(len(out[start : start + length]))
    out += rng.uniform(0.001, 0.02) * rng.standard_normal(n)
    return (out / max(1.0, np.abs(out).max())).astype(np.float32)


def _log_mel(
    audio: np.ndarray, sr: int = 16000, n_fft: int = 512, hop: int = 160, win: int = 400, mels: int = 32
) -> np.ndarray:
    """Log-mel frames as openWakeWord's melspectrogram.onnx gives them (approximately: power
    spectrum, 32 mel bands 60-3800 Hz, 10*log10), then its x/10 + 2 scaling. [frames, 32]."""
    frames = 1 + (len(audio) - win) // hop
    idx = np.arange(win)[None] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(audio[idx] * np.hanning(win), n_fft)) ** 2
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = hz(np.linspace(mel(60), mel(3800), mels + 2))
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    bank = np.maximum(
        0,
        np.minimum(
            (freqs - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None]),
            (edges[2:, None] - freqs) / (edges[2:, None] - edges[1:-1, None]),
        ),
    )
    return (10 * np.log10(np.maximum(spec @ bank.T, 1e-10))) / 10 + 2


# -- per-model preprocessing (CORPUS.md) -----------------------------------------------------
