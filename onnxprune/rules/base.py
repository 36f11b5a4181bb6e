"""The rule protocols, the contexts rules work in, and the registry that maps op types to rules.

Rules import nothing from the analysis or the surgery: what a rule may read and do is given
here as protocols (``PropagateContext``, ``ApplyContext``) that those modules' context classes
satisfy. A weight-bearing rule also describes its layer (``LayerSemantics``): criteria, MACs,
compensation and reconstruction ask the registry for it (``RuleRegistry.layer``), so a user's
rule for a custom op works there too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .._core import Layout, NotApplicable, UnionFind
from ..errors import UsageError

__all__ = [
    "ApplyContext",
    "Attrs",
    "ChannelAffine",
    "ChannelLayouts",
    "ConstFn",
    "Layer",
    "LayerSemantics",
    "NotRefitted",
    "Parameter",
    "PropagateContext",
    "Rule",
    "RuleRegistry",
    "Shape",
    "node_attrs",
    "numel",
    "passthrough",
]

ConstFn = Callable[[np.ndarray], np.ndarray]
Shape = tuple[int | None, ...]  # a tensor's dims, None where unknown (as graph.Shape)
Attrs = Mapping[str, object]


class Parameter(Protocol):
    """A constant operand as rules see it (graph.Param): float values and the nodes between the
    consumer and the stored tensor (Identity, DequantizeLinear, QuantizeLinear)."""

    @property
    def values(self) -> np.ndarray: ...

    @property
    def chain(self) -> tuple[gs.Node, ...]: ...


@runtime_checkable
class PropagateContext(Protocol):
    """What a rule's ``propagate`` may read and do (analysis.AnalysisContext implements it)."""

    @property
    def opset(self) -> int: ...

    @property
    def shapes(self) -> Mapping[str, Shape]: ...

    @property
    def layouts(self) -> Mapping[str, Layout]: ...

    @property
    def uf(self) -> UnionFind: ...

    # -- reading ---------------------------------------------------------------------------
    def layout(self, t: gs.Tensor | None) -> Layout | None: ...

    def shape(self, t: gs.Tensor | None) -> Shape | None: ...

    def rank(self, t: gs.Tensor | None) -> int | None: ...

    def param(self, t: gs.Tensor | None) -> Parameter | None: ...

    def runtime_value(
        self, t: gs.Tensor, overrides: Mapping[str, tuple[int, ...]] | None = None
    ) -> np.ndarray | None: ...

    def runtime_sources(self, t: gs.Tensor) -> frozenset[str] | None: ...

    # -- writing ---------------------------------------------------------------------------
    def set_layout(self, t: gs.Tensor, layout: Layout) -> None: ...

    def fresh(self, n: int) -> np.ndarray: ...

    def union(self, a: np.ndarray, b: np.ndarray) -> None: ...

    def pin(self, ids: np.ndarray, reason: str) -> None: ...

    def ids_for(self, t: gs.Tensor, axis: int, n: int, why: str) -> np.ndarray: ...

    def invalid(self, reason: str) -> None: ...

    def add_source(self, node: gs.Node, n: int) -> np.ndarray: ...

    def add_sink(self, node: gs.Node, input_index: int, axis: int, fold_blocker: str | None) -> None: ...

    def add_balance(self, rows: list[np.ndarray], reason: str, whole: list[np.ndarray] | None = None) -> None:
        """Every row loses as many channels, except rows whose ``whole`` ids all go."""
        ...

    def validate_shape_input(self, node: gs.Node, index: int) -> None: ...


class ChannelLayouts(Protocol):
    """The part of the channel analysis a rule reads during surgery."""

    @property
    def layouts(self) -> Mapping[str, Layout]: ...

    @property
    def shapes(self) -> Mapping[str, Shape]: ...


@runtime_checkable
class ApplyContext(Protocol):
    """What a rule's ``apply`` may read and do (surgery.SurgeryContext implements it): edits
    are described, and committed by the surgery afterwards."""

    @property
    def opset(self) -> int: ...

    @property
    def analysis(self) -> ChannelLayouts: ...

    # -- reading ---------------------------------------------------------------------------
    def keep(self, t: gs.Tensor, axis: int, n: int) -> np.ndarray: ...

    def param(self, t: gs.Tensor | None) -> Parameter | None: ...

    def param_values(self, node: gs.Node, index: int) -> np.ndarray: ...

    def param_values_or_none(self, node: gs.Node, index: int) -> np.ndarray | None: ...

    def fold_delta(self, node: gs.Node, index: int, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | None: ...

    # -- edits -----------------------------------------------------------------------------
    def slice_param(self, node: gs.Node, index: int, axis: int, keep: np.ndarray) -> None: ...

    def group_columns(self, node: gs.Node, index: int, groups: int, keep: np.ndarray) -> None: ...

    def set_param(self, node: gs.Node, index: int, values: np.ndarray) -> None: ...

    def set_attr(self, node: gs.Node, name: str, value: object) -> None: ...

    def drop_attr(self, node: gs.Node, name: str) -> None: ...

    def add_input(self, node: gs.Node, index: int, values: np.ndarray, hint: str) -> None: ...

    def append_bias(self, node: gs.Node, bias: np.ndarray) -> None: ...


@runtime_checkable
class Rule(Protocol):
    """What every module in ``rules/`` provides, one object per op family.

    ``propagate`` maps channel ids from the node's inputs to its outputs (creating fresh ids for
    sources, recording sinks and constraints) or returns NotApplicable with a reason, and then the
    analysis pins every channel the node touches. ``apply`` edits the node for the channels
    removed: parameters, attributes, shape constants. Only surgery calls ``apply``.
    """

    op_types: tuple[str, ...]
    domain: str

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None: ...

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None: ...


@runtime_checkable
class LayerSemantics(Protocol):
    """How a weight-bearing op uses its weight, for everything outside the channel analysis:
    weight criteria (each output channel's filter), MACs (report, budget), data-free
    compensation (zeroing filters) and reconstruction (refitting the weight as a matrix).

    Implemented by the Conv, ConvTranspose, Gemm and MatMul rules (and ConvInteger and
    MatMulInteger); subclass one of them for a custom op that computes the same way. Every
    method takes the node's attributes as a plain mapping (``node_attrs``); callers use the
    bound view ``RuleRegistry.layer`` returns. An integer layer may also set
    ``weight_zero_point_index`` (the input holding the weight zero point): its filters are then
    the weight minus that zero point.
    """

    data_index: int  # the input whose channels the layer reads
    weight_index: int
    bias_index: int | None  # the input holding the bias (one value per output channel), if any
    # Data-free compensation: a removed filter read by a BatchNormalization takes that
    # BatchNormalization's running mean as its output (so it yields its beta), not its bias.
    bn_mean_compensation: bool

    def out_axis(self, attrs: Attrs) -> int:
        """The weight's output-channel axis."""
        ...

    def in_axis(self, attrs: Attrs) -> int:
        """The weight's input-channel axis."""
        ...

    def groups(self, attrs: Attrs) -> int: ...

    def bias_scale(self, attrs: Attrs) -> float:
        """What the bias input is multiplied by before it is added (Gemm's beta; 1 for most)."""
        ...

    def macs(self, attrs: Attrs, x: Shape | None, w: Shape | None, y: Shape | None) -> int | None:
        """Multiply-accumulates for one sample given the data input, weight and output shapes
        (None when they are not known well enough)."""
        ...

    def weight_matrix(self, attrs: Attrs, weight: np.ndarray) -> np.ndarray:
        """The weight as [out, in·k]: row o is output channel o's filter, flattened input
        channel by input channel (k columns each: kernel positions, 1 for a matrix)."""
        ...

    def weight_from_matrix(self, attrs: Attrs, matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """The inverse of ``weight_matrix`` for a weight of ``shape``."""
        ...

    def refittable(self, attrs: Attrs) -> bool:
        """Can reconstruction refit this layer (``input_rows`` gives its input as rows)?"""
        ...

    def input_rows(
        self, attrs: Attrs, x: np.ndarray, weight_shape: tuple[int, ...], picks: int, rng: np.random.Generator
    ) -> np.ndarray | None:
        """At up to ``picks`` sampled output positions, the input ``x`` as rows [positions, in·k]
        (every input channel, k columns each) so that ``rows @ weight_matrix.T + bias`` is the
        layer's output there; with ``groups(attrs)`` = G > 1, output block g (of out/G rows)
        reads column block g (of in·k/G columns) only, so ``rows[:, block g] @
        weight_matrix[rows of g].T``. None when this layer cannot be refitted. ``x`` is the
        input as the model computed it (float32 for a float32 model: reconstruction keeps the
        activations as they came); the rows are float64, any arithmetic on them done there."""
        ...


@runtime_checkable
class ChannelAffine(Protocol):
    """A per-channel affine op whose parameters can absorb an affine map of its input (an
    inference-mode BatchNormalization): re-calibration folds its per-channel corrections there
    (``RuleRegistry.channel_affine``)."""

    def input_affine_params(
        self, attrs: Attrs, params: tuple[np.ndarray, ...], a: np.ndarray, c: np.ndarray
    ) -> dict[int, np.ndarray] | None:
        """Given the values of the op's inputs 1.. (``params``, float), the new values (by input
        index) with which the op computes on x exactly what it computed on ``a * x + c``, per
        channel; None when it cannot."""
        ...


class NotRefitted:
    """For a weight-bearing rule whose layers reconstruction never refits: ``refittable`` is
    False and there are no input rows (the rest of ``LayerSemantics`` is the rule's own)."""

    def refittable(self, attrs: Attrs) -> bool:
        return False

    def input_rows(
        self, attrs: Attrs, x: np.ndarray, weight_shape: tuple[int, ...], picks: int, rng: np.random.Generator
    ) -> np.ndarray | None:
        return None


@dataclass(frozen=True)
class Layer:
    """A weight-bearing node's ``LayerSemantics`` bound to its attributes (what
    ``RuleRegistry.layer`` returns for either a graphsurgeon node or an onnx NodeProto)."""

    op: str
    node: gs.Node | onnx.NodeProto = field(repr=False)
    semantics: LayerSemantics

    @cached_property
    def attrs(self) -> Attrs:
        """The node's attributes (read on first use: MACs and weight indices need none)."""
        return node_attrs(self.node)

    @property
    def data_index(self) -> int:
        return self.semantics.data_index

    @property
    def weight_index(self) -> int:
        return self.semantics.weight_index

    @property
    def bias_index(self) -> int | None:
        return self.semantics.bias_index

    @property
    def bn_mean_compensation(self) -> bool:
        return self.semantics.bn_mean_compensation

    @property
    def out_axis(self) -> int:
        return self.semantics.out_axis(self.attrs)

    @property
    def in_axis(self) -> int:
        return self.semantics.in_axis(self.attrs)

    @property
    def groups(self) -> int:
        return self.semantics.groups(self.attrs)

    @property
    def bias_scale(self) -> float:
        return self.semantics.bias_scale(self.attrs)

    @property
    def refittable(self) -> bool:
        return self.semantics.refittable(self.attrs)

    def macs(self, x: Shape | None, w: Shape | None, y: Shape | None) -> int | None:
        return self.semantics.macs(self.attrs, x, w, y)

    def weight_matrix(self, weight: np.ndarray) -> np.ndarray:
        """[out, in·k]; its rows are the per-filter view weight criteria score."""
        return self.semantics.weight_matrix(self.attrs, weight)

    def weight_from_matrix(self, matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return self.semantics.weight_from_matrix(self.attrs, matrix, shape)

    def zero_rows(self, weight: np.ndarray) -> np.ndarray:
        """Boolean per output channel: is its filter all zero?"""
        return ~np.any(self.weight_matrix(weight) != 0, axis=1)

    def input_rows(
        self, x: np.ndarray, weight_shape: tuple[int, ...], picks: int, rng: np.random.Generator
    ) -> np.ndarray | None:
        return self.semantics.input_rows(self.attrs, x, weight_shape, picks, rng)


def node_attrs(node: gs.Node | onnx.NodeProto) -> Attrs:
    """A node's attributes as a read-only mapping, strings as ``str``, for either representation."""
    if isinstance(node, gs.Node):
        return MappingProxyType(dict(node.attrs))
    attrs: dict[str, object] = {}
    for a in node.attribute:
        if a.type == _INT:  # the common kinds read directly: this runs for every layer of a model
            attrs[a.name] = a.i
        elif a.type == _INTS:
            attrs[a.name] = list(a.ints)
        elif a.type == _FLOAT:
            attrs[a.name] = a.f
        else:
            v = onnx.helper.get_attribute_value(a)
            attrs[a.name] = v.decode() if isinstance(v, bytes) else v
    return MappingProxyType(attrs)


_INT, _INTS, _FLOAT = onnx.AttributeProto.INT, onnx.AttributeProto.INTS, onnx.AttributeProto.FLOAT


def numel(shape: Shape | None) -> int | None:
    """Number of elements of a fully known shape, else None."""
    if shape is None or any(d is None for d in shape):
        return None
    return int(np.prod(shape)) if len(shape) else 1


class RuleRegistry:
    """Rules keyed by (domain, op type) with an opset range. An object, not a global: copy the
    default one and register rules for custom ops, then pass it to ``analyze``/``prune``."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._rules: dict[tuple[str, str], list[tuple[int, int, Rule]]] = {}
        self._is_layer: dict[int, bool] = {}  # id(rule) -> implements LayerSemantics (a slow check)
        for rule in rules:
            self.register(rule)

    def register(self, rule: Rule, *, min_opset: int = 1, max_opset: int = 10**6) -> RuleRegistry:
        """Add ``rule`` for its op types (later registrations win). Returns self for chaining."""
        if not isinstance(rule, Rule):
            raise UsageError(f"{rule!r} does not implement the Rule protocol (op_types, domain, propagate, apply)")
        for op in rule.op_types:
            key = (_norm_domain(rule.domain), op)
            self._rules.setdefault(key, []).insert(0, (min_opset, max_opset, rule))
        return self

    def lookup(self, op_type: str, domain: str = "", opset: int = 21) -> Rule | None:
        for lo, hi, rule in self._rules.get((_norm_domain(domain), op_type), []):
            if lo <= opset <= hi:
                return rule
        return None

    def layer(self, node: gs.Node | onnx.NodeProto, opset: int = 21) -> Layer | None:
        """The layer semantics of a weight-bearing node, bound to its attributes; None when its
        rule (if any) does not describe a layer."""
        if isinstance(node, gs.Node):
            op, domain = node.op, node.domain or ""
        else:
            op, domain = node.op_type, node.domain
        rule = self.lookup(op, domain, opset)
        if rule is None:
            return None
        is_layer = self._is_layer.get(id(rule))
        if is_layer is None:
            is_layer = self._is_layer[id(rule)] = isinstance(rule, LayerSemantics)
        return Layer(op, node, rule) if is_layer else None

    def channel_affine(self, node: gs.Node | onnx.NodeProto, opset: int = 21) -> ChannelAffine | None:
        """The rule of ``node`` when it is a per-channel affine op that can absorb an affine map
        of its input (see ChannelAffine), else None."""
        if isinstance(node, gs.Node):
            op, domain = node.op, node.domain or ""
        else:
            op, domain = node.op_type, node.domain
        rule = self.lookup(op, domain, opset)
        return rule if isinstance(rule, ChannelAffine) else None

    def op_types(self) -> list[str]:
        return sorted({op for (_, op) in self._rules})

    def copy(self) -> RuleRegistry:
        new = RuleRegistry()
        new._rules = {k: list(v) for k, v in self._rules.items()}
        new._is_layer = dict(self._is_layer)
        return new


def _norm_domain(domain: str | None) -> str:
    return "" if domain in (None, "", "ai.onnx") else domain


def data_inputs_tracked(node: gs.Node, ctx: PropagateContext, data_indices: Iterable[int]) -> NotApplicable | None:
    """Refuse when a tracked tensor arrives on an input that is not a data input (e.g. Clip's min)."""
    data = set(data_indices)
    for i, t in enumerate(node.inputs):
        if i not in data and t.name and ctx.layout(t) is not None:
            return NotApplicable(f"input {i} ({t.name}) carries channels but is not a data input")
    return None


def passthrough(
    node: gs.Node,
    ctx: PropagateContext,
    const_fn: ConstFn | None = None,
    *,
    spatial_from: int | None = None,
) -> NotApplicable | None:
    """Output 0 carries input 0's channel ids unchanged.

    ``const_fn`` maps known per-channel constants (None: output constants unknown): it gets
    the float64 array of the channels' constants (NaN where unknown, left unknown) and returns
    theirs; a function of one number is applied to each channel's.
    ``spatial_from``: the op works on axes >= this one, so channel ids there are not allowed.
    """
    bad = data_inputs_tracked(node, ctx, [0])
    if bad:
        return bad
    layout = ctx.layout(node.inputs[0])
    if layout is None:
        return None
    if spatial_from is not None and any(a >= spatial_from for a in layout.axes):
        return NotApplicable(f"channels on an axis the op computes over (axes >= {spatial_from})")
    out_rank = ctx.rank(node.outputs[0])
    if out_rank is not None and out_rank != layout.rank:
        return NotApplicable(f"output rank {out_rank} differs from input rank {layout.rank}")
    consts = {}
    if const_fn is not None:
        with np.errstate(all="ignore"):
            consts = {a: _guard_nan(const_fn, layout.const(a)) for a in layout.axes}
    ctx.set_layout(node.outputs[0], Layout(layout.rank, layout.axes, consts))
    return None


def _guard_nan(fn: ConstFn, c: np.ndarray) -> np.ndarray:
    """Apply ``fn`` to known constants only: an unknown (NaN) input stays unknown. ``fn`` takes
    the array of constants; a function of one number (``max(c, 0.0)``, ``math.exp``: a user's
    rule) is applied to each channel's."""
    try:
        out = np.asarray(fn(c), dtype=np.float64)
    except (TypeError, ValueError):  # 'truth value of an array is ambiguous', 'only length-1 arrays'
        out = np.array([fn(float(x)) for x in c.reshape(-1)], dtype=np.float64).reshape(c.shape)
    return np.where(np.isnan(c), np.nan, out)
