"""Generate the small ONNX fixtures in fixtures/ with onnx.helper (no torch).

Each model has zeroed filters the way NNCF's filter pruning leaves them (filter weights, bias,
and the following BatchNormalization's gamma and beta). Deterministic: running it twice gives
byte-identical files, and tests/test_fixtures.py checks the committed files are current.

    python tools/make_fixtures.py [--out fixtures]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from onnxprune.testing import GraphBuilder


def conv_bn_relu(b: GraphBuilder, x: str, cout: int, k: int = 3, zero: tuple[int, ...] = (), **kw: object) -> str:
    y = b.conv(x, cout, k, zero=zero, **kw)
    return b.op("Relu", b.bn(y, zero=zero))


def classifier_head(b: GraphBuilder, x: str, classes: int = 10) -> str:
    g = b.op("GlobalAveragePool", x)
    f = b.op("Flatten", g, axis=1)
    return b.gemm(f, b.channels[x], classes)


def residual() -> onnx.ModelProto:
    """Two residual blocks: a channel goes only when every branch feeding the Add is zero."""
    b = GraphBuilder(opset=17, seed=1)
    x = b.input("input", [None, 3, 16, 16])
    stem = conv_bn_relu(b, x, 16, zero=(2, 5, 9))
    h = conv_bn_relu(b, stem, 16, zero=(0, 1, 7))  # inner channels: free to go
    h = b.bn(b.conv(h, 16, zero=(2, 5, 11)), zero=(2, 5, 11))
    y = b.op("Relu", b.op("Add", stem, h))  # 2 and 5 are zero on both sides, 9 and 11 on one
    h = conv_bn_relu(b, y, 32, zero=(3, 4))
    h = b.bn(b.conv(h, 32, stride=2, zero=tuple(range(0, 32, 4))), zero=tuple(range(0, 32, 4)))
    sc = b.bn(b.conv(y, 32, k=1, stride=2, zero=tuple(range(0, 32, 8))), zero=tuple(range(0, 32, 8)))
    y = b.op("Relu", b.op("Add", h, sc))
    b.output(classifier_head(b, y))
    return b.build("residual")


def dense_concat() -> onnx.ModelProto:
    """DenseNet-style: BatchNormalization after Concat (OpenVINO's pass crashes here)."""
    b = GraphBuilder(opset=13, seed=2)
    x = b.input("input", [None, 3, 16, 16])
    feats = b.conv(x, 8, zero=(1, 6))
    for i in range(3):
        h = b.op("Relu", b.bn(feats))
        h = conv_bn_relu(b, h, 8, k=1, zero=(i, i + 3))
        h = b.conv(h, 4, zero=(i,))
        feats = b.op("Concat", feats, h, axis=1, channels=b.channels[feats] + 4)
    h = b.op("Relu", b.bn(feats))
    b.output(classifier_head(b, h))
    return b.build("dense_concat")


def shuffle() -> onnx.ModelProto:
    """ShuffleNetV2 unit: Split, branch, Concat, channel shuffle (Reshape-Transpose-Reshape)."""
    b = GraphBuilder(opset=13, seed=3)
    x = b.input("input", [1, 3, 16, 16])
    y = conv_bn_relu(b, x, 16, zero=(3, 11))
    for unit in range(2):
        split = b.const(np.array([8, 8], np.int64), "split")
        left, right = b.op("Split", y, split, axis=1, outputs=2, channels=8)
        r = conv_bn_relu(b, right, 8, k=1, zero=(unit, 4))
        r = b.bn(b.conv(r, 8, group=8, zero=(unit,)), zero=(unit,))
        r = conv_bn_relu(b, r, 8, k=1, zero=(2, 6))
        cat = b.op("Concat", left, r, axis=1, channels=16)
        s1 = b.op("Reshape", cat, b.const(np.array([1, 2, 8, 16, 16], np.int64), "shape"))
        t = b.op("Transpose", s1, perm=[0, 2, 1, 3, 4])
        y = b.op("Reshape", t, b.const(np.array([1, 16, 16, 16], np.int64), "shape"), channels=16)
    b.output(classifier_head(b, y))
    return b.build("shuffle")


def squeeze_excitation() -> onnx.ModelProto:
    """MobileNetV3-style block: depthwise Conv, SE gate (GlobalAveragePool-Conv-Relu-Conv-HardSigmoid-Mul), HardSwish."""
    b = GraphBuilder(opset=17, seed=4)
    x = b.input("input", [None, 3, 16, 16])
    y = b.op("HardSwish", b.bn(b.conv(x, 16, zero=(1, 4, 12)), zero=(1, 4, 12)))
    d = b.op("HardSwish", b.bn(b.conv(y, 16, group=16, zero=(4, 7)), zero=(4, 7)))
    s = b.op("GlobalAveragePool", d)
    s = b.op("Relu", b.conv(s, 4, k=1, zero=(2,)))
    s = b.op("HardSigmoid", b.conv(s, 16, k=1, zero=(12,)), alpha=1 / 6, beta=0.5)
    g = b.op("Mul", d, s)
    p = b.bn(b.conv(g, 24, k=1, zero=(0, 5)), zero=(0, 5))
    # SiLU exported as Sigmoid * x
    q = b.bn(b.conv(p, 24, k=1, zero=(5, 9)), zero=(5, 9))
    q = b.op("Mul", q, b.op("Sigmoid", q))
    b.output(classifier_head(b, q))
    return b.build("squeeze_excitation")


def yolo_like() -> onnx.ModelProto:
    """YOLOv8-style C2f block (Split -> bottlenecks -> Concat) and an Upsample+Concat neck."""
    b = GraphBuilder(opset=17, seed=5)
    x = b.input("images", [1, 3, 32, 32])

    def silu_conv(t: str, c: int, k: int = 3, stride: int = 1, zero: tuple[int, ...] = ()) -> str:
        y = b.bn(b.conv(t, c, k, stride=stride, zero=zero), zero=zero)
        return b.op("Mul", y, b.op("Sigmoid", y))

    def c2f(t: str, c: int, zero: tuple[int, ...]) -> str:
        y = silu_conv(t, 2 * c, k=1, zero=zero)
        a, h = b.op("Split", y, b.const(np.array([c, c], np.int64), "split"), axis=1, outputs=2, channels=c)
        m = silu_conv(silu_conv(h, c, zero=(1,)), c, zero=(0, 2))
        m = b.op("Add", h, m)
        cat = b.op("Concat", a, h, m, axis=1, channels=3 * c)
        return silu_conv(cat, 2 * c, k=1, zero=(3,))

    p1 = c2f(silu_conv(x, 16, stride=2, zero=(2, 9)), 8, zero=(0, 9))
    p2 = c2f(silu_conv(p1, 32, stride=2, zero=(4, 30)), 16, zero=(6, 17))
    up = b.op("Resize", p2, "", b.const(np.array([1, 1, 2, 2], np.float32), "scales"), mode="nearest")
    neck = b.op("Concat", up, p1, axis=1, channels=48)
    head = silu_conv(neck, 16, zero=(5, 7))
    det = b.conv(head, 12, k=1)
    b.output(det)
    return b.build("yolo_like")


def quantized() -> onnx.ModelProto:
    """The residual fixture quantized to QDQ by onnxruntime's quantize_static (per-channel int8)."""
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.data = iter([{"input": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(4)])

        def get_next(self) -> dict | None:
            return next(self.data, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "f.onnx"), Path(tmp, "q.onnx")
        onnx.save(residual(), src)
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
        )
        model = onnx.load(dst)
    model.producer_version = ""  # keep the file identical across onnxruntime versions
    return model


# -- one small model per rule family ------------------------------------------------------


def family_conv() -> onnx.ModelProto:
    """Conv, depthwise Conv (multiplier 1 and 2), grouped Conv, ConvTranspose."""
    b = GraphBuilder(opset=17, seed=10)
    x = b.input("input", [None, 3, 8, 8])
    y = conv_bn_relu(b, x, 8, zero=(1, 6))
    d = b.op("Relu", b.conv(y, 8, group=8, zero=(1, 3, 6)))  # NNCF masks the depthwise filters too
    m = b.op("Relu", b.conv(d, 16, group=8, bias=False))
    g = b.op("Relu", b.conv(m, 8, group=2, zero=(0, 4)))
    w = b.weights([8, 4, 2, 2], zero_rows=(2,), axis=1)
    up = b.op("ConvTranspose", g, b.const(w, "Wt"), channels=4, kernel_shape=[2, 2], strides=[2, 2])
    b.output(b.conv(b.op("Relu", up), 2, k=1, pads=0))
    return b.build("family_conv")


def family_gemm() -> onnx.ModelProto:
    """Flatten -> Gemm, Gemm -> Gemm, MatMul with a constant weight."""
    b = GraphBuilder(opset=13, seed=11)
    x = b.input("input", [None, 3, 4, 4])
    y = b.op("Relu", b.conv(x, 6, zero=(2, 5)))
    f = b.op("Flatten", y, axis=1, channels=96)
    h = b.op("Relu", b.gemm(f, 96, 12, zero=(0, 7)))
    mm = b.op("MatMul", h, b.const(b.weights([12, 8], zero_rows=(3,), axis=1), "mm"), channels=8)
    b.output(b.gemm(b.op("Relu", mm), 8, 4))
    return b.build("family_gemm")


def family_normalization() -> onnx.ModelProto:
    """BatchNormalization (constant folded into a 1x1 reader), InstanceNormalization."""
    b = GraphBuilder(opset=17, seed=12)
    x = b.input("input", [None, 3, 8, 8])
    y = b.op("Relu", b.bn(b.conv(x, 8, zero=(1, 4))))  # nonzero beta: constant channels
    y = b.conv(y, 8, k=1, pads=0, zero=(2,))
    n = b.op(
        "InstanceNormalization",
        y,
        b.const(np.ones(8, np.float32), "s"),
        b.const(np.linspace(-1, 1, 8).astype(np.float32), "b"),
    )
    b.output(b.conv(b.op("Relu", n), 2, k=1, pads=0))
    return b.build("family_normalization")


def family_activation() -> onnx.ModelProto:
    """A chain of unary ops: zeros survive Relu/LeakyRelu/HardSwish/Tanh; Sigmoid makes 0.5."""
    b = GraphBuilder(opset=18, seed=13)
    x = b.input("input", [None, 3, 8, 8])
    y = b.conv(x, 8, zero=(0, 3, 6))
    for op, attrs in (("LeakyRelu", {"alpha": 0.1}), ("HardSwish", {}), ("Tanh", {}), ("Mish", {}), ("Elu", {})):
        y = b.op(op, y, **attrs)
    y = b.op("Clip", y, b.const(np.float32(-2.0), "lo"), b.const(np.float32(2.0), "hi"))
    y = b.op("PRelu", y, b.const(np.linspace(0.1, 0.4, 8).astype(np.float32).reshape(8, 1, 1), "slope"))
    y = b.op("Sigmoid", b.conv(y, 8, zero=(2,)))
    b.output(b.conv(y, 2, k=1, pads=0))
    return b.build("family_activation")


def family_elementwise() -> onnx.ModelProto:
    """Add/Sub/Mul/Div/Max/Where with broadcasting and per-channel constant operands."""
    b = GraphBuilder(opset=17, seed=14)
    x = b.input("input", [None, 3, 8, 8])
    a = b.op("Relu", b.conv(x, 8, zero=(1, 2, 5)))
    c = b.conv(x, 8, zero=(2, 5, 7))
    y = b.op("Add", a, c)
    y = b.op("Mul", y, b.const(np.linspace(0.5, 1.5, 8).astype(np.float32).reshape(1, 8, 1, 1), "scale"))
    y = b.op("Sub", y, b.const(np.float32(0.0), "zero"))
    y = b.op("Div", y, b.const(np.full((8, 1, 1), 2.0, np.float32), "two"))
    y = b.op("Max", y, b.op("Neg", y))
    y = b.op("Where", b.op("Greater", y, b.const(np.float32(1.0), "one")), y, b.op("Mul", y, y))
    b.output(b.conv(y, 2))
    return b.build("family_elementwise")


def family_concat_split() -> onnx.ModelProto:
    """Concat, Split (sizes input) and Slice on the channel axis."""
    b = GraphBuilder(opset=13, seed=15)
    x = b.input("input", [None, 3, 8, 8])
    a = b.op("Relu", b.conv(x, 6, zero=(1,)))
    c = b.op("Relu", b.conv(x, 6, zero=(0, 4)))
    cat = b.op("Concat", a, c, axis=1, channels=12)
    p, q = b.op("Split", cat, b.const(np.array([5, 7], np.int64), "split"), axis=1, outputs=2, channels=5)
    b.channels[q] = 7
    s = b.op(
        "Slice",
        q,
        b.const(np.array([1], np.int64), "st"),
        b.const(np.array([6], np.int64), "en"),
        b.const(np.array([1], np.int64), "ax"),
        channels=5,
    )
    b.output(b.op("Add", b.conv(p, 2), b.conv(s, 2)))
    return b.build("family_concat_split")


def family_reshape() -> onnx.ModelProto:
    """Transpose, Reshape with a constant shape, Squeeze/Unsqueeze."""
    b = GraphBuilder(opset=13, seed=16)
    x = b.input("input", [1, 3, 4, 4])
    y = b.op("Relu", b.conv(x, 6, zero=(2, 3)))
    t = b.op("Transpose", y, perm=[0, 2, 3, 1])
    t = b.op("Transpose", t, perm=[0, 3, 1, 2])
    g = b.op("GlobalAveragePool", t)
    s = b.op("Squeeze", g, b.const(np.array([2, 3], np.int64), "ax"))
    u = b.op("Unsqueeze", s, b.const(np.array([2, 3], np.int64), "ax"))
    r = b.op(
        "Reshape", b.op("Relu", b.conv(t, 4, zero=(0,))), b.const(np.array([1, 64], np.int64), "shape"), channels=64
    )
    b.output(b.op("Add", b.gemm(r, 64, 3), b.op("Flatten", b.conv(u, 3, k=1, pads=0), axis=1)))
    return b.build("family_reshape")


def family_pooling() -> onnx.ModelProto:
    """MaxPool, AveragePool, Pad (spatial), Resize, ReduceMean over space."""
    b = GraphBuilder(opset=18, seed=17)
    x = b.input("input", [1, 3, 8, 8])
    y = b.op("Relu", b.conv(x, 8, zero=(1, 6)))
    y = b.op("MaxPool", y, kernel_shape=[2, 2], strides=[2, 2])
    y = b.op("Pad", y, b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"), mode="reflect")
    y = b.op("AveragePool", y, kernel_shape=[3, 3])
    y = b.op("Resize", y, "", b.const(np.array([1, 1, 2, 2], np.float32), "scales"), mode="nearest")
    m = b.op("ReduceMean", y, b.const(np.array([2, 3], np.int64), "axes"), keepdims=1)
    b.output(b.op("Add", b.conv(y, 2, k=1, pads=0), b.conv(m, 2, k=1, pads=0)))
    return b.build("family_pooling")


def custom_activation() -> onnx.ModelProto:
    """conv 3->8 (filters 1 and 5 zero) -> com.example MyAct -> conv 8->4: MyAct is a model-local
    function whose body is a Relu (onnxruntime runs it), an op onnxprune has no rule for; with the
    rule of fixtures/custom_rules.py (--rules) the two zero filters go."""
    from onnxprune.testing import as_custom_op

    b = GraphBuilder(opset=17, seed=11)
    x = b.input("input", [None, 3, 16, 16])
    b.output(b.conv(b.op("Relu", b.conv(x, 8, zero=(1, 5))), 4))
    model = as_custom_op(b.build("custom_activation"), "Relu", "MyAct", "com.example")
    for node, name in zip(model.graph.node, ("conv1", "act", "conv2")):
        node.name = name
    return model


# Models with a custom op: nothing goes without the rule for it (fixtures/custom_rules.py), so
# they are not in FIXTURES (each of those is pruned by the zero criterion with the default rules).
CUSTOM_OP_FIXTURES: dict[str, Callable[[], onnx.ModelProto]] = {"custom_activation": custom_activation}

FIXTURES: dict[str, Callable[[], onnx.ModelProto]] = {
    "family_conv": family_conv,
    "family_gemm": family_gemm,
    "family_normalization": family_normalization,
    "family_activation": family_activation,
    "family_elementwise": family_elementwise,
    "family_concat_split": family_concat_split,
    "family_reshape": family_reshape,
    "family_pooling": family_pooling,
    "residual": residual,
    "dense_concat": dense_concat,
    "shuffle": shuffle,
    "squeeze_excitation": squeeze_excitation,
    "yolo_like": yolo_like,
    "residual_qdq": quantized,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "fixtures"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, make in {**FIXTURES, **CUSTOM_OP_FIXTURES}.items():
        onnx.save(make(), out / f"{name}.onnx")
        print(out / f"{name}.onnx")


if __name__ == "__main__":
    main()
