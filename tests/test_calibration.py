"""Calibration inputs: .npz delegation, folders of images with preprocessing, spec parsing and
the calibration/evaluation split."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_helpers import one_line_error, run_cli
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnxprune.calibration import PRESETS, Preprocess, load_calibration, parse_preprocess, split_calibration
from onnxprune.errors import UsageError
from onnxprune.testing import GraphBuilder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def tiny_model(shape: tuple[int | None, ...] = (None, 3, 8, 8), channels: int = 3) -> onnx.ModelProto:
    b = GraphBuilder(opset=17)
    x = b.input("input", shape)
    b.channels[x] = channels  # conv needs the channel count, also for NHWC-shaped inputs
    b.output(b.conv(x, 4))
    return b.build()


def solid(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (4, 4)) -> Path:
    """A solid-colour image; ``size`` is (width, height) as Pillow takes it."""
    Image.new("RGB", size, rgb).save(path)
    return path


def same(actual: np.ndarray, expected: object) -> None:
    np.testing.assert_allclose(actual, np.asarray(expected, np.float64), rtol=0, atol=1e-6)


# -- images --------------------------------------------------------------------------------


def test_solid_image_scaled_nchw(tmp_path: Path) -> None:
    solid(tmp_path / "a.png", (255, 0, 128), (8, 8))
    feeds = load_calibration(str(tmp_path), tiny_model())
    assert len(feeds) == 1 and list(feeds[0]) == ["input"]
    x = feeds[0]["input"]
    assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32
    same(x[0, 0], np.ones((8, 8)))
    same(x[0, 1], np.zeros((8, 8)))
    same(x[0, 2], np.full((8, 8), 128 / 255))


def test_mean_std_per_channel(tmp_path: Path) -> None:
    solid(tmp_path / "a.png", (255, 0, 128), (8, 8))
    pre = Preprocess(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    x = load_calibration(tmp_path, tiny_model(), pre)[0]["input"]
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    for c in range(3):
        same(x[0, c], np.full((8, 8), expected[c]))


def test_raw_scale_and_bgr_order(tmp_path: Path) -> None:
    solid(tmp_path / "a.png", (10, 20, 30), (8, 8))
    x = load_calibration(tmp_path, tiny_model(), Preprocess(scale=1.0, channel_order="BGR"))[0]["input"]
    assert [float(v) for v in x[0, :, 0, 0]] == [30.0, 20.0, 10.0]
    rgb = load_calibration(tmp_path, tiny_model(), Preprocess(scale=1.0))[0]["input"]
    assert [float(v) for v in rgb[0, :, 0, 0]] == [10.0, 20.0, 30.0]


def test_bgr_mean_applies_in_bgr_order(tmp_path: Path) -> None:
    solid(tmp_path / "a.png", (10, 20, 30), (8, 8))
    pre = Preprocess(scale=1.0, mean=(1.0, 2.0, 3.0), channel_order="BGR")
    x = load_calibration(tmp_path, tiny_model(), pre)[0]["input"]
    assert [float(v) for v in x[0, :, 0, 0]] == [29.0, 18.0, 7.0]


def test_nhwc_layout(tmp_path: Path) -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    img[:, :, 0] = np.arange(8)[None, :]  # red = column index
    img[:, :, 1] = np.arange(8)[:, None] * 10  # green = 10 * row index
    img[:, :, 2] = 200
    Image.fromarray(img).save(tmp_path / "g.png")
    nhwc = load_calibration(tmp_path, tiny_model([None, 8, 8, 3]), Preprocess(scale=1.0, layout="NHWC"))[0]["input"]
    assert nhwc.shape == (1, 8, 8, 3) and nhwc.dtype == np.float32
    assert np.array_equal(nhwc[0], img.astype(np.float32))
    nchw = load_calibration(tmp_path, tiny_model(), Preprocess(scale=1.0))[0]["input"]
    assert np.array_equal(nchw[0], img.transpose(2, 0, 1).astype(np.float32))


def test_size_from_model(tmp_path: Path) -> None:
    solid(tmp_path / "a.png", (255, 255, 255), (5, 3))
    x = load_calibration(tmp_path, tiny_model([None, 3, 6, 10]))[0]["input"]
    assert x.shape == (1, 3, 6, 10)
    same(x, np.ones((1, 3, 6, 10)))


def test_resize_to_given_size_nearest_and_bilinear(tmp_path: Path) -> None:
    img = np.array([[0, 100], [200, 250]], np.uint8)  # 2x2 grey checker
    Image.fromarray(np.stack([img] * 3, axis=-1)).save(tmp_path / "a.png")
    model = tiny_model([None, 3, "H", "W"])
    near = load_calibration(tmp_path, model, Preprocess(size=(4, 6), scale=1.0, resize="nearest"))[0]["input"]
    assert near.shape == (1, 3, 4, 6)
    expected = np.repeat(np.repeat(img, 2, axis=0), 3, axis=1).astype(np.float32)
    for c in range(3):
        assert np.array_equal(near[0, c], expected)
    bil = load_calibration(tmp_path, model, Preprocess(size=(4, 6), scale=1.0))[0]["input"]
    reference = np.asarray(Image.fromarray(img).resize((6, 4), Image.BILINEAR), np.float32)
    assert bil.shape == (1, 3, 4, 6)
    assert np.array_equal(bil[0, 1], reference)
    assert not np.array_equal(bil[0, 1], expected)


def test_single_channel_model_uses_greyscale(tmp_path: Path) -> None:
    solid(tmp_path / "a.png", (255, 255, 255), (8, 8))
    x = load_calibration(tmp_path, tiny_model([None, 1, 8, 8], channels=1), Preprocess(mean=(0.5,), std=(0.5,)))[0][
        "input"
    ]
    assert x.shape == (1, 1, 8, 8)
    same(x, np.ones((1, 1, 8, 8)))  # (1 - 0.5) / 0.5
    # the default, all-equal mean/std apply to one channel too
    y = load_calibration(tmp_path, tiny_model([None, 1, 8, 8], channels=1))[0]["input"]
    same(y, np.ones((1, 1, 8, 8)))


def test_file_order_extensions_and_determinism(tmp_path: Path) -> None:
    for i, name in enumerate(["c.PNG", "a.bmp", "b.jpg", "d.ppm", "e.webp"]):
        solid(tmp_path / name, (i * 50, 0, 0), (8, 8))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub.png").mkdir()
    feeds = load_calibration(tmp_path, tiny_model(), Preprocess(scale=1.0, resize="nearest"))
    reds = [float(f["input"][0, 0, 0, 0]) for f in feeds]
    # a.bmp(50), b.jpg(~100, lossy), c.PNG(0), d.ppm(150), e.webp(~200, lossy)
    assert len(reds) == 5
    assert reds[0] == 50.0 and reds[2] == 0.0 and reds[3] == 150.0
    assert abs(reds[1] - 100) <= 3 and abs(reds[4] - 200) <= 3
    again = load_calibration(tmp_path, tiny_model(), Preprocess(scale=1.0, resize="nearest"))
    assert all(np.array_equal(a["input"], b["input"]) for a, b in zip(feeds, again))


def test_subset_when_more_than_limit(tmp_path: Path) -> None:
    for i in range(10):
        solid(tmp_path / f"img{i:02d}.png", (i, 0, 0), (8, 8))
    model = tiny_model()

    def picked(seed: int) -> list[int]:
        feeds = load_calibration(tmp_path, model, Preprocess(scale=1.0), limit=4, seed=seed)
        return [int(f["input"][0, 0, 0, 0]) for f in feeds]

    first = picked(0)
    assert len(first) == 4 and len(set(first)) == 4
    assert first == sorted(first)  # name order kept
    assert picked(0) == first
    expected = sorted(np.random.default_rng(0).choice(10, size=4, replace=False).tolist())
    assert first == expected
    assert len({tuple(picked(s)) for s in range(5)}) > 1  # the seed matters
    every = load_calibration(tmp_path, model, Preprocess(scale=1.0), limit=10)
    assert [int(f["input"][0, 0, 0, 0]) for f in every] == list(range(10))


def test_float16_input(tmp_path: Path) -> None:
    solid(tmp_path / "a.png", (255, 0, 0), (8, 8))
    model = tiny_model()
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    x = load_calibration(tmp_path, model)[0]["input"]
    assert x.dtype == np.float16 and float(x[0, 0, 0, 0]) == 1.0


# -- npz -----------------------------------------------------------------------------------


def test_npz_delegates(tmp_path: Path) -> None:
    data = np.arange(5 * 3 * 8 * 8, dtype=np.float32).reshape(5, 3, 8, 8)
    path = tmp_path / "cal.npz"
    np.savez(path, input=data)
    feeds = load_calibration(str(path), tiny_model(), Preprocess(layout="NHWC"), limit=3)
    assert len(feeds) == 3
    for i, f in enumerate(feeds):
        assert f["input"].shape == (1, 3, 8, 8)
        assert np.array_equal(f["input"][0], data[i])


# -- errors --------------------------------------------------------------------------------


def error(source: object, model: onnx.ModelProto | None = None, pre: Preprocess | None = None, **kw: object) -> str:
    with pytest.raises(UsageError) as info:
        load_calibration(source, model or tiny_model(), pre, **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_path(tmp_path: Path) -> None:
    path = str(tmp_path / "nope")
    assert path in error(path)


def test_not_npz_nor_folder(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("hi")
    msg = error(str(path))
    assert str(path) in msg and ".npz" in msg


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images")
    msg = error(str(tmp_path))
    assert str(tmp_path) in msg and "no images" in msg


def test_unreadable_image(tmp_path: Path) -> None:
    solid(tmp_path / "a.png", (1, 2, 3), (8, 8))
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"this is not a jpeg")
    msg = error(str(tmp_path))
    assert str(bad) in msg and "cannot read image" in msg


def test_more_than_one_input(tmp_path: Path) -> None:
    solid(tmp_path / "a.png", (1, 2, 3), (8, 8))
    b = GraphBuilder(opset=17)
    x = b.input("x", [None, 3, 8, 8])
    y = b.input("y", [None, 3, 8, 8])
    b.output(b.op("Add", x, y))
    msg = error(str(tmp_path), b.build())
    assert str(tmp_path) in msg and "npz" in msg and "x, y" in msg


def test_channel_count_mismatch(tmp_path: Path) -> None:
    solid(tmp_path / "a.png", (1, 2, 3), (8, 8))
    grey = tiny_model([None, 1, 8, 8], channels=1)
    msg = error(str(tmp_path), grey, PRESETS["imagenet"])
    assert str(tmp_path) in msg and "mean has 3 values" in msg and "1 channel" in msg
    msg = error(str(tmp_path), tiny_model(), Preprocess(std=(0.5, 0.25)))
    assert str(tmp_path) in msg and "std has 2 values" in msg


def test_no_size_anywhere(tmp_path: Path) -> None:
    solid(tmp_path / "a.png", (1, 2, 3), (8, 8))
    msg = error(str(tmp_path), tiny_model([None, 3, "H", "W"]))
    assert str(tmp_path) in msg and "size=HxW" in msg


def test_other_image_input_problems(tmp_path: Path) -> None:
    solid(tmp_path / "a.png", (1, 2, 3), (8, 8))
    folder = str(tmp_path)
    assert "does not match" in error(folder, tiny_model(), Preprocess(size=(4, 4)))
    assert "fixed batch of 2" in error(folder, tiny_model([2, 3, 8, 8]))
    assert "wrong layout" in error(folder, tiny_model([None, 8, 8, 3]))  # NHWC model read as NCHW
    b = GraphBuilder(opset=17)
    b.output(b.op("Relu", b.input("input", [None, 3])))
    assert "rank 2" in error(folder, b.build())
    assert "at least 1" in error(folder, limit=0)


# -- parse_preprocess ----------------------------------------------------------------------


def test_parse_presets() -> None:
    imagenet = parse_preprocess("imagenet")
    assert imagenet == Preprocess(size=None, scale=1 / 255, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert (imagenet.channel_order, imagenet.layout, imagenet.resize) == ("RGB", "NCHW", "bilinear")
    raw = parse_preprocess(" RAW ")
    assert raw == Preprocess(scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert parse_preprocess("") == Preprocess()
    assert parse_preprocess("imagenet,size=320x240,order=BGR") == Preprocess(
        size=(320, 240), mean=IMAGENET_MEAN, std=IMAGENET_STD, channel_order="BGR"
    )


def test_parse_every_key() -> None:
    spec = "size=224x200,scale=0.0039215686,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,order=BGR,layout=NHWC,resize=nearest"
    assert parse_preprocess(spec) == Preprocess(
        size=(224, 200),
        scale=0.0039215686,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        channel_order="BGR",
        layout="NHWC",
        resize="nearest",
    )
    assert parse_preprocess("size=96").size == (96, 96)
    assert parse_preprocess("scale=1/255").scale == 1 / 255
    assert parse_preprocess("mean=127.5,std=127.5,scale=1") == Preprocess(scale=1.0, mean=(127.5,), std=(127.5,))
    assert parse_preprocess("order=bgr,layout=nhwc,resize=NEAREST") == Preprocess(
        channel_order="BGR", layout="NHWC", resize="nearest"
    )
    assert parse_preprocess("channel_order=BGR").channel_order == "BGR"


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("colour=red", "'colour'"),
        ("size=22x", "size: '22x'"),
        ("size=0x4", "size: '0x4'"),
        ("size=1x2x3", "size: '1x2x3'"),
        ("scale=abc", "scale: 'abc'"),
        ("scale=0", "scale: '0'"),
        ("mean=0.5/x", "mean: '0.5/x'"),
        ("std=1/0", "std: '1/0'"),
        ("order=RBG", "order: 'RBG'"),
        ("layout=CHW", "layout: 'CHW'"),
        ("resize=cubic", "resize: 'cubic'"),
        ("size=", "empty value for size"),
        ("imagenett", "'imagenett'"),
    ],
)
def test_parse_bad_input(spec: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_preprocess(spec)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_preprocess_validates() -> None:
    assert Preprocess(channel_order="bgr", size=[4, 5]) == Preprocess(channel_order="BGR", size=(4, 5))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="std must be non-zero"):
        Preprocess(std=(1.0, 0.0, 1.0))
    with pytest.raises(UsageError, match="layout"):
        Preprocess(layout="CHW")
    with pytest.raises(UsageError, match="size"):
        Preprocess(size=(0, 4))


# -- split ---------------------------------------------------------------------------------


def test_split_given_evaluation() -> None:
    feeds, given = [{"i": 1}, {"i": 2}], [{"i": 9}]
    assert split_calibration(feeds, given) == (feeds, given, "")


@pytest.mark.parametrize(
    "n, calibration, evaluation",
    [
        (2, [0], [1]),
        (3, [0, 1], [2]),
        (4, [0, 1, 2], [3]),
        (9, [0, 1, 2, 4, 5, 6, 8], [3, 7]),
    ],
)
def test_split_one_set(n: int, calibration: list[int], evaluation: list[int]) -> None:
    feeds = [{"i": i} for i in range(n)]
    cal, ev, note = split_calibration(feeds, None)
    assert [f["i"] for f in cal] == calibration and [f["i"] for f in ev] == evaluation
    assert note == (
        f"calibration and evaluation inputs come from one set, split 3:1 ({len(calibration)} calibration, {len(evaluation)} evaluation)"
    )


def test_split_single_sample() -> None:
    only = [{"i": 0}]
    cal, ev, note = split_calibration(only, None)
    assert cal == only and ev == only and "same sample" in note


def test_split_nothing() -> None:
    with pytest.raises(UsageError):
        split_calibration([], None)


def test_import_is_cheap() -> None:
    code = "import sys, onnxprune.calibration\nprint(','.join(m for m in ('PIL', 'numpy', 'onnx') if m in sys.modules))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == ""


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


# -- first-contact sweep of session 8 (was tests/test_contact7.py) --


def test_images_for_an_nhwc_model_say_which_preprocess_to_give(tmp_path: Path) -> None:
    """tf2onnx's NHWC models (3 of the corpus's 13) with a folder of images. Before: '... has 50
    channels in NCHW layout; images give 1 (L) or 3 (RGB) (wrong layout?)', no word of the option."""
    from PIL import Image

    w = numpy_helper.from_array(np.full((2, 3, 1, 1), 0.5, np.float32), "w")
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "w"], ["y"], name="conv"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10, 12, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 10, 12])
    model = tmp_path / "nhwc.onnx"
    graph = helper.make_graph(nodes, "nhwc", [x], [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray((rng.random((10, 12, 3)) * 255).astype(np.uint8)).save(images / f"{i}.png")
    p = run_cli(
        "quantize", str(model), "-o", str(tmp_path / "q.onnx"), "--calibration", str(images), "--preprocess", "imagenet"
    )
    assert one_line_error(p) == (
        f"onnxprune: error: {images}: input 'x' has 10 channels in NCHW layout; images give 1 (L) or 3 (RGB) "
        "(wrong layout? its shape [?, 10, 12, 3] looks NHWC: give --preprocess layout=NHWC, with your other preprocess keys)"
    )
    p = run_cli(
        "quantize",
        str(model),
        "-o",
        str(tmp_path / "q.onnx"),
        "--calibration",
        str(images),
        "--preprocess",
        "layout=NHWC",
    )
    assert p.returncode == 0, p.stderr


def test_preprocess_must_fit_the_calibration_inputs(tmp_path: Path) -> None:
    """A folder of images without --preprocess was read as x/255, RGB, no mean or std, without
    a word (wrong for an ImageNet-normalised or BGR 0..255 model, and the plan built on it);
    --preprocess beside an .npz, or without --calibration, was dropped without a word. Now each
    is refused before any work, prune and quantize, CLI and library; a folder with a spec runs."""
    import onnxprune
    from onnxprune.quantize_config import QuantizeConfig

    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        solid(images / f"{i}.png", (10 * i, 20, 30), (8, 8))
    model = tmp_path / "m.onnx"
    onnx.save(tiny_model(), model)
    npz = tmp_path / "c.npz"
    np.savez(npz, input=np.zeros((4, 3, 8, 8), np.float32))
    out = tmp_path / "o.onnx"
    folder = (
        f"onnxprune: error: {images}: a folder of images needs --preprocess, how an image becomes the model's input "
        "(as in its training): e.g. imagenet (x/255, then ImageNet mean/std, RGB, NCHW), scale=1/255 (x/255 alone), "
        "raw (0..255), or keys size=HxW,scale=S,mean=a/b/c,std=a/b/c,order=RGB|BGR,layout=NCHW|NHWC"
    )
    for command in (["prune", "--ratio", "0.25"], ["quantize"]):
        argv = [command[0], model, "-o", out, *command[1:]]
        assert one_line_error(run_cli(*argv, "--calibration", images)) == folder
        assert one_line_error(run_cli(*argv, "--calibration", npz, "--preprocess", "imagenet")) == (
            f"onnxprune: error: --preprocess imagenet: {npz} is an .npz of input arrays, used as they are; a "
            "preprocessing applies only to a folder of images: drop it"
        )
        assert not out.exists()
    assert one_line_error(run_cli("prune", model, "-o", out, "--ratio", "0.25", "--preprocess", "raw")) == (
        "onnxprune: error: --preprocess raw given without --calibration: it says how a folder of calibration images "
        "becomes the model's input; give --calibration FOLDER or drop it"
    )
    with pytest.raises(onnxprune.UsageError, match="a folder of images needs"):
        onnxprune.PruneConfig(ratio=0.25, calibration=str(images))
    with pytest.raises(onnxprune.UsageError, match=r"is an \.npz of input arrays"):
        QuantizeConfig(calibration=str(npz), preprocess="imagenet")
    p = run_cli("prune", model, "-o", out, "--ratio", "0.25", "--calibration", images, "--preprocess", "scale=1/255")
    assert p.returncode == 0, p.stderr
