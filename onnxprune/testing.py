"""A small builder of ONNX test graphs (used by the tests and tools/make_fixtures.py), and a
deterministic stand-in for the latency timers.

Public so that users who add rules for their own ops can test them the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["GraphBuilder", "StepTimer", "as_custom_op", "step_timer"]


class GraphBuilder:
    """Builds NCHW graphs layer by layer, tracking each tensor's channel count."""

    def __init__(self, opset: int = 17, seed: int = 0, ir_version: int | None = None) -> None:
        self.opset = opset
        self.ir_version = ir_version
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.channels: dict[str, int] = {}
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    # -- tensors ---------------------------------------------------------------------------
    def input(self, name: str, shape: Sequence[int | str | None], dtype: int = TensorProto.FLOAT) -> str:
        dims = ["N" if d is None else d for d in shape]
        self.inputs.append(helper.make_tensor_value_info(name, dtype, dims))
        if len(shape) > 1 and isinstance(shape[1], int):
            self.channels[name] = shape[1]
        return name

    def output(self, name: str, dtype: int = TensorProto.FLOAT, shape: Sequence[int | str | None] | None = None) -> str:
        """Declare a graph output; without ``shape`` it is filled in by shape inference in build()."""
        dims = None if shape is None else ["N" if d is None else d for d in shape]
        self.outputs.append(helper.make_tensor_value_info(name, dtype, dims))
        return name

    def const(self, values: np.ndarray, base: str = "c", as_node: bool = False) -> str:
        name = self.name(base)
        tensor = numpy_helper.from_array(np.asarray(values), name)
        if as_node:
            self.nodes.append(helper.make_node("Constant", [], [name], value=tensor, name=self.name("Constant")))
        else:
            self.inits.append(tensor)
        return name

    def weights(self, shape: Sequence[int], zero_rows: Sequence[int] = (), axis: int = 0) -> np.ndarray:
        w = self.rng.standard_normal(shape).astype(np.float32) * 0.5
        if zero_rows:
            idx = [slice(None)] * len(shape)
            idx[axis] = list(zero_rows)
            w[tuple(idx)] = 0
        return w

    # -- layers ----------------------------------------------------------------------------
    def op(self, op_type: str, *inputs: str, channels: int | None = None, outputs: int = 1, **attrs: object) -> str:
        names = [self.name(op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.name(op_type + "_node"), **attrs))
        ch = channels if channels is not None else self.channels.get(inputs[0]) if inputs else None
        for n in names:
            if ch is not None:
                self.channels[n] = ch
        return names[0] if outputs == 1 else names  # type: ignore[return-value]

    def conv(
        self,
        x: str,
        cout: int,
        k: int = 3,
        *,
        group: int = 1,
        pads: int | None = None,
        zero: Sequence[int] = (),
        bias: bool | np.ndarray = True,
        stride: int = 1,
        weight: str | None = None,
    ) -> str:
        cin = self.channels[x]
        pads = k // 2 if pads is None else pads
        if weight is None:
            weight = self.const(self.weights([cout, cin // group, k, k], zero), "W")
        inputs = [x, weight]
        if bias is not False:
            b = bias if isinstance(bias, np.ndarray) else self.rng.standard_normal(cout).astype(np.float32) * 0.1
            b = np.asarray(b, np.float32).copy()
            if not isinstance(bias, np.ndarray):
                b[list(zero)] = 0
            inputs.append(self.const(b, "B"))
        return self.op(
            "Conv", *inputs, channels=cout, kernel_shape=[k, k], pads=[pads] * 4, group=group, strides=[stride, stride]
        )

    def bn(self, x: str, zero: Sequence[int] = ()) -> str:
        c = self.channels[x]
        gamma = self.rng.uniform(0.5, 1.5, c).astype(np.float32)
        beta = (self.rng.standard_normal(c) * 0.1).astype(np.float32)
        gamma[list(zero)] = 0
        beta[list(zero)] = 0
        mean = (self.rng.standard_normal(c) * 0.1).astype(np.float32)
        var = self.rng.uniform(0.5, 1.5, c).astype(np.float32)
        params = [self.const(v, n) for v, n in ((gamma, "gamma"), (beta, "beta"), (mean, "mean"), (var, "var"))]
        return self.op("BatchNormalization", x, *params, epsilon=1e-5)

    def gemm(self, x: str, n_in: int, n_out: int, zero: Sequence[int] = (), trans_b: bool = True) -> str:
        w = self.weights([n_out, n_in], zero) if trans_b else self.weights([n_in, n_out], zero, axis=1)
        b = (self.rng.standard_normal(n_out) * 0.1).astype(np.float32)
        b[list(zero)] = 0
        return self.op("Gemm", x, self.const(w, "fcW"), self.const(b, "fcB"), channels=n_out, transB=int(trans_b))

    def build(self, name: str = "graph", domains: dict[str, int] | None = None) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, self.inputs, self.outputs, self.inits)
        opsets = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="onnxprune-tests")
        if self.ir_version is not None:
            model.ir_version = self.ir_version
        inferred = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(model).graph.output}
        for out in model.graph.output:
            if out.type.tensor_type.HasField("shape"):
                continue
            if inferred.get(out.name) is not None and inferred[out.name].type.tensor_type.HasField("shape"):
                out.CopyFrom(inferred[out.name])
        onnx.checker.check_model(model)
        return model


def as_custom_op(model: onnx.ModelProto, op_type: str, new_op: str, domain: str) -> onnx.ModelProto:
    """A copy of ``model`` whose ``op_type`` nodes are ``domain.new_op`` nodes, that op being a
    model-local function whose body is the original op: onnxruntime and shape inference see
    through it, onnxprune sees a custom op. For testing a rule for your own op end to end."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = [n for n in out.graph.node if n.op_type == op_type and n.domain in ("", "ai.onnx")]
    arity = max((len(n.input) for n in nodes), default=1)
    attrs = {a.name: a.type for n in nodes for a in n.attribute}
    inputs = [f"in{i}" for i in range(arity)]
    outputs = [f"out{i}" for i in range(max((len(n.output) for n in nodes), default=1))]
    body = helper.make_node(op_type, inputs, outputs)
    body.attribute.extend(onnx.AttributeProto(name=a, ref_attr_name=a, type=t) for a, t in sorted(attrs.items()))
    opset = next(o.version for o in out.opset_import if o.domain in ("", "ai.onnx"))
    out.functions.append(
        helper.make_function(
            domain, new_op, inputs, outputs, [body], [helper.make_opsetid("", opset)], attributes=sorted(attrs)
        )
    )
    for n in nodes:
        n.op_type, n.domain = new_op, domain
    if all(o.domain != domain for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(domain, 1))
    return out


def random_cnn(seed: int, max_blocks: int = 6) -> onnx.ModelProto:
    """A random CNN built from the supported rule families, with random zeroed filters.

    Blocks: conv-BN-act, residual Add, two-branch Concat, Split (channel halves) with a branch,
    grouped and depthwise convs, squeeze-excitation gates, channel shuffle, then a head of
    GlobalAveragePool or Flatten feeding Gemm. The same seed gives the same model (used by the
    property-based tests and tools/fuzz.py).
    """
    rng = np.random.default_rng(seed)
    shuffle_ok = bool(rng.integers(0, 2))  # static batch 1: Reshape with a fixed shape
    b = GraphBuilder(opset=int(rng.choice([11, 13, 17])), seed=seed)
    hw = int(rng.integers(4, 9))
    x = b.input("input", [1 if shuffle_ok else None, int(rng.integers(1, 5)), hw, hw])

    def zeros(c: int) -> tuple[int, ...]:
        k = int(rng.integers(0, c // 2 + 1))
        return tuple(int(i) for i in rng.choice(c, size=k, replace=False))

    def act(t: str) -> str:
        ops = ["Relu", "LeakyRelu", "Sigmoid", "Identity"] + (["HardSwish"] if b.opset >= 14 else [])
        op = str(rng.choice(ops))
        if op == "Sigmoid":  # SiLU
            return b.op("Mul", t, b.op("Sigmoid", t))
        return b.op(op, t)

    def cbr(t: str, c: int, k: int = 3, **kw: object) -> str:
        z = zeros(c)
        return act(b.bn(b.conv(t, c, k, zero=z, **kw), zero=z))

    y = cbr(x, 2 * int(rng.integers(2, 5)))
    for _ in range(int(rng.integers(1, max_blocks + 1))):
        c = b.channels[y]
        kind = str(rng.choice(["cbr", "residual", "concat", "split", "grouped", "depthwise", "se", "shuffle"]))
        if kind == "residual":
            h = b.bn(b.conv(cbr(y, c), c, zero=zeros(c)))
            y = act(b.op("Add", y, h))
        elif kind == "concat":
            a, d = cbr(y, int(rng.integers(2, 6)), k=1), cbr(y, int(rng.integers(2, 6)))
            y = b.op("Concat", a, d, axis=1, channels=b.channels[a] + b.channels[d])
        elif kind == "split" and c % 2 == 0 and c >= 4:
            half = c // 2
            p, q = b.op(
                "Split",
                y,
                *([b.const(np.array([half, half], np.int64), "split")] if b.opset >= 13 else []),
                axis=1,
                outputs=2,
                channels=half,
                **({} if b.opset >= 13 else {"split": [half, half]}),
            )
            y = b.op("Concat", p, cbr(q, half, k=1), axis=1, channels=c)
        elif kind == "grouped" and c % 2 == 0:
            y = cbr(y, c, group=2)
        elif kind == "depthwise":
            y = act(b.bn(b.conv(y, c, group=c, zero=zeros(c)), zero=()))
        elif kind == "se":
            s = b.op("GlobalAveragePool", y)
            s = b.op("Relu", b.conv(s, max(1, c // 2), k=1, pads=0))
            s = b.op("Sigmoid", b.conv(s, c, k=1, pads=0, zero=zeros(c)))
            y = b.op("Mul", y, s)
        elif kind == "shuffle" and shuffle_ok and c % 2 == 0:
            s = b.op("Reshape", y, b.const(np.array([1, 2, c // 2, hw, hw], np.int64), "shape"))
            t = b.op("Transpose", s, perm=[0, 2, 1, 3, 4])
            y = b.op("Reshape", t, b.const(np.array([1, c, hw, hw], np.int64), "shape"), channels=c)
        else:
            y = cbr(y, int(rng.integers(2, 9)))
    c = b.channels[y]
    if rng.integers(0, 2):
        f = b.op("Flatten", b.op("GlobalAveragePool", y), axis=1, channels=c)
        b.output(b.gemm(f, c, 5))
    else:
        f = b.op("Flatten", y, axis=1, channels=c * hw * hw)
        b.output(b.gemm(f, c * hw * hw, 5))
    return b.build(f"random_cnn_{seed}")


class _StepTimed:
    def __init__(self, timer: StepTimer, seconds: float) -> None:
        self.timer, self.seconds, self.precision = timer, seconds, "f32"

    def run(self) -> float:
        self.timer.runs += 1
        return self.seconds


class StepTimer:
    """A timer (``onnxprune.latency.timers.Timer``) that times nothing: a model's "latency" is
    ``base`` plus ``per_block`` for every started block of ``step`` channels of every Conv's
    outputs and inputs (from its weight's shape), so a unit's latency is a known step function
    of its kept channels. Counts what it was asked for (``loads``, ``runs``). Its costs add up
    (``additive``): latency tables built with it skip the whole-model calibration unless asked.
    ``clock()`` is the run's clock for time budgets, in fake seconds: each reading ``tick`` later
    than the one before, so work timed between two readings took ``tick`` (0: no time passes)."""

    additive = True

    def __init__(self, step: int = 16, base: float = 1e-3, per_block: float = 1e-5, tick: float = 0.0) -> None:
        self.step, self.base, self.per_block = step, base, per_block
        self.tick = tick
        self.now = 0.0
        self.loads = 0
        self.runs = 0

    def clock(self) -> float:
        """Fake seconds: this reading, the next ``tick`` later."""
        now = self.now
        self.now += self.tick
        return now

    @property
    def runtime(self) -> str:
        return f"step-timer {self.step}"

    def latency(self, model: onnx.ModelProto) -> float:
        weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
        blocks = 0
        for node in model.graph.node:
            if node.op_type != "Conv" or node.input[1] not in weights:
                continue
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            out_c, in_c = weights[node.input[1]][0], weights[node.input[1]][1] * group
            blocks += -(-out_c // self.step) + -(-in_c // self.step)
        return self.base + self.per_block * blocks

    def load(self, model: onnx.ModelProto | str, input_shapes: object, source: str) -> _StepTimed:
        self.loads += 1
        proto = onnx.load(model) if isinstance(model, str) else model
        return _StepTimed(self, self.latency(proto))


def step_timer(settings: object) -> StepTimer:
    """A ``StepTimer`` of step 16, as the hidden ``latency-table --timer`` option asks for one."""
    return StepTimer(16)
