"""NNCF's post-training quantization, called quietly and with its failures typed, and the
model it is handed: weights stored as int8 x scale folded to float, an opset before 13 converted.

NNCF is imported only when one of these functions runs (it takes a second or two), prints
progress bars and logs on its own: the library never prints, so both are captured.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import OnnxPruneError, UnsupportedModel, backend_import_error, first_line

if TYPE_CHECKING:
    import onnx

__all__ = ["PER_CHANNEL_OPSET", "Validation", "fold_cast_weights", "nncf_quantize", "per_channel_opset", "require_nncf"]

# NNCF's ONNX backend quantizes weights per channel only from this opset on (DequantizeLinear's
# axis); below it every weight gets one scale, and it says so only in its log.
PER_CHANNEL_OPSET = 13
# The inputs of a weighted op that may hold its weights (a MatMul or Gemm may have them first).
_WEIGHT_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (0, 1), "MatMul": (0, 1)}

Feeds = Mapping[str, np.ndarray]


def require_nncf() -> Any:
    try:
        import nncf
    except ImportError as exc:  # not installed, broken, or Ctrl-C while it loaded
        raise backend_import_error(
            "nncf", exc, "nncf is not installed: pip install 'nncf>=3.0' (int8 quantization)"
        ) from None
    return nncf


@contextlib.contextmanager
def _quiet(nncf: Any) -> Iterator[None]:
    """NNCF's log below errors and its progress bars (rich, on stdout) kept off the terminal."""
    logger = logging.getLogger("nncf")
    level = logger.level
    nncf.set_log_level(logging.ERROR)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        logger.setLevel(level)


@dataclass(frozen=True)
class Validation:
    """Samples and the metric NNCF's accuracy control keeps within ``max_drop`` of the
    float model's: ``metric(outputs, indices)``, the outputs (a list per sample) of the
    samples at ``indices`` (NNCF validates on subsets too). Or ``judge(model)``: the user's
    validation function on the model NNCF hands over (a ModelProto or an OpenVINO
    CompiledModel), scoring its own data; NNCF's validation set is then one placeholder item,
    so each of NNCF's validations is one call. ``relative``: ``max_drop`` is a fraction of the
    float model's value (NNCF's DropType.RELATIVE)."""

    feeds: Sequence[Feeds]
    metric: Callable[[list[list[np.ndarray]], list[int]], float] | None
    max_drop: float
    judge: Callable[[Any], float] | None = None
    relative: bool = False


def _run_outputs(model: Any, feeds: Sequence[Feeds], source: str) -> list[list[np.ndarray]]:
    """Every sample's outputs from the model NNCF hands the validation function: a ModelProto
    (ONNX backend; run by onnxruntime with its integer kernels) or an OpenVINO CompiledModel."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        from .runtime import session

        run = session(model, source=source, what="the int8 model", optimize=True)
        return [run(f) for f in feeds]
    results = []
    for f in feeds:
        out = model(dict(f))
        results.append([np.asarray(out[model.output(i)]) for i in range(len(model.outputs))])
    return results


def nncf_quantize(
    model: Any,
    calibration: Sequence[Feeds],
    *,
    preset: str,
    subset_size: int,
    fast_bias_correction: bool,
    ignored_names: Sequence[str] = (),
    validation: Validation | None = None,
    source: str = "<model>",
) -> Any:
    """``nncf.quantize`` (or ``quantize_with_accuracy_control`` with ``validation``) of an ONNX
    ModelProto or an OpenVINO Model; any NNCF failure is an UnsupportedModel naming the file."""
    nncf = require_nncf()
    dataset = nncf.Dataset(list(calibration))
    scope = nncf.IgnoredScope(names=list(ignored_names)) if ignored_names else None
    options = {
        "preset": nncf.QuantizationPreset(preset),
        "subset_size": min(subset_size, len(calibration)),
        "fast_bias_correction": fast_bias_correction,
        "ignored_scope": scope,
    }
    try:
        with _quiet(nncf):
            if validation is None:
                return nncf.quantize(model, dataset, **options)
            judge, metric = validation.judge, validation.metric
            if judge is not None:
                items: list[Any] = [(0, {})]  # the user's function scores its own data

                def validate(candidate: Any, data: Any) -> tuple[float, None]:
                    return judge(candidate), None

            else:
                assert metric is not None
                items = [(i, f) for i, f in enumerate(validation.feeds)]

                def validate(candidate: Any, data: Any) -> tuple[float, None]:
                    chosen = list(data)
                    outputs = _run_outputs(candidate, [f for _, f in chosen], source)
                    return metric(outputs, [i for i, _ in chosen]), None

            return nncf.quantize_with_accuracy_control(
                model,
                dataset,
                nncf.Dataset(items, lambda item: item[1]),
                validate,
                max_drop=validation.max_drop,
                drop_type=nncf.DropType.RELATIVE if validation.relative else nncf.DropType.ABSOLUTE,
                **options,
            )
    except (OnnxPruneError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        import onnx

        from .runtime import onnxruntime_message

        detail = onnxruntime_message(exc) or first_line(exc)
        if isinstance(
            exc, (AttributeError, KeyError, TypeError, IndexError)
        ):  # a bug inside NNCF: where, not just 'type'
            detail = f"{type(exc).__name__} {detail!r} in {_nncf_frame(exc)}"
        hint = " (NNCF's OpenVINO backend may take it: give -o OUT.xml)" if isinstance(model, onnx.ModelProto) else ""
        raise UnsupportedModel(f"{source}: NNCF cannot quantize the model: {detail}; nothing written{hint}") from None


def _nncf_frame(exc: BaseException) -> str:
    """Where in NNCF ``exc`` was raised (its innermost frame inside the nncf package)."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/nncf/" in f.filename.replace("\\", "/")]
    if not frames:
        return "NNCF"
    f = frames[-1]
    return f"nncf/{f.filename.replace(chr(92), '/').rsplit('/nncf/', 1)[1]}:{f.lineno} ({f.name})"


def fold_cast_weights(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """``proto`` with every weight of a Conv, ConvTranspose, Gemm or MatMul that is computed
    through a ``Cast`` from stored constants (weight-only int8: ``INT8 initializer -> Cast ->
    Mul(per-channel scale)``, possibly with Identity, shape ops or more arithmetic) replaced by
    a float32 initializer of its value, and the nodes and initializers only that computation
    read removed; and the names of the weighted nodes whose weights were folded. Any other
    ``Cast`` of a stored integer to a float becomes an initializer of its value too. ``proto``
    itself is returned, unchanged, when there is nothing to fold; else a copy.

    The value is computed with numpy as onnxruntime computes the nodes (params.ParamResolver:
    a float32 Cast of an int8, then a float32 multiply): the folded weights are bit-equal to
    what onnxruntime computes for them (on the PP-OCRv6 recogniser the outputs then differ by
    1e-6 of 1.0, onnxruntime pre-packing a constant weight for another kernel). Why: NNCF
    quantizes only weights stored as float initializers (a weight computed by nodes is an
    activation to it), and its ONNX backend fails on a ``Cast`` whose input is an initializer
    (nncf 3.4: AttributeError in eliminate_nop_cast). A chain through
    QuantizeLinear / DequantizeLinear / FakeQuantize is not folded (such models are refused as
    already quantized)."""
    import onnx
    import onnx_graphsurgeon as gs
    from onnx import numpy_helper

    from .params import ParamResolver, is_quantized_chain

    if not any(n.op_type == "Cast" for n in proto.graph.node):
        return proto, ()
    graph = gs.import_onnx(proto)  # read only: the values behind each weight
    resolve = ParamResolver()
    stored = {i.name for i in proto.graph.initializer}
    graph_outputs = {o.name for o in proto.graph.output}
    values: dict[str, np.ndarray] = {}
    folded: list[str] = []
    for node in graph.nodes:
        for index in _WEIGHT_INPUTS.get(node.op, ()) if (node.domain or "") in ("", "ai.onnx") else ():
            if index >= len(node.inputs):
                continue
            tensor = node.inputs[index]
            if tensor.name in stored or tensor.name in graph_outputs or isinstance(tensor, gs.Constant):
                continue
            if tensor.name not in values:
                param = resolve(tensor)
                if (
                    param is None
                    or not any(n.op == "Cast" for n in param.chain)
                    or is_quantized_chain(param)
                    or np.asarray(param.values).dtype != np.float32
                ):
                    continue
                values[tensor.name] = np.ascontiguousarray(param.values)
            if node.name not in folded:
                folded.append(node.name)
    # Any other Cast of a stored integer to a float (NNCF's ONNX backend fails on each): the
    # value it computes, exact (a float to an integer is left: out of range it is undefined).
    arrays = {i.name: i for i in proto.graph.initializer}
    for cast in proto.graph.node:
        if (
            cast.op_type == "Cast"
            and cast.domain in ("", "ai.onnx")
            and len(cast.input) == 1
            and cast.input[0] in arrays
            and cast.output[0] not in graph_outputs
            and cast.output[0] not in values
        ):
            to = next((a.i for a in cast.attribute if a.name == "to"), None)
            stored_value = numpy_helper.to_array(arrays[cast.input[0]])
            target = onnx.helper.tensor_dtype_to_np_dtype(to) if to else None
            if target is not None and stored_value.dtype.kind in "iub" and np.dtype(target).kind == "f":
                values[cast.output[0]] = stored_value.astype(target)
    if not values:
        return proto, ()
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    for name, array in values.items():
        g.initializer.append(numpy_helper.from_array(array, name))

    # The nodes computing the folded values go, and then whatever only they read (a node no
    # one read before stays: only what the fold left unread goes).
    def unread(nodes: list[onnx.NodeProto]) -> set[int]:
        read = _names_read(nodes) | graph_outputs
        return {id(n) for n in nodes if n.output and not any(o in read for o in n.output if o)}

    nodes = list(g.node)  # the same Python objects throughout: unread() tells them apart by id
    before = unread(nodes)
    kept = [n for n in nodes if not any(o in values for o in n.output)]
    while gone_now := unread(kept) - before:
        kept = [n for n in kept if id(n) not in gone_now]
    read = _names_read(kept) | graph_outputs
    initializers = [i for i in g.initializer if i.name in read]
    del g.node[:]
    g.node.extend(kept)
    del g.initializer[:]
    g.initializer.extend(initializers)
    gone = {o for n in proto.graph.node for o in n.output} - {o for n in kept for o in n.output} - set(values)
    infos = [v for v in g.value_info if v.name not in gone]
    del g.value_info[:]
    g.value_info.extend(infos)
    return out, tuple(folded)


def per_channel_opset(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """``proto`` converted to opset 13 when it is older (onnx's version converter), so that
    NNCF's ONNX backend quantizes its weights per channel, and a note saying so; when the
    converter fails, ``proto`` and a note that the weights are quantized per tensor."""
    version = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), PER_CHANNEL_OPSET)
    if version >= PER_CHANNEL_OPSET:
        return proto, ""
    import onnx
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(proto, PER_CHANNEL_OPSET)
        onnx.checker.check_model(converted)
    except Exception as exc:  # the converter raises several unrelated types
        from .errors import first_line

        return proto, (
            f"opset {version}: NNCF's ONNX backend quantizes the weights of a model older than opset "
            f"{PER_CHANNEL_OPSET} per tensor (one scale a layer), and onnx's version converter could not convert it "
            f"({first_line(exc)}); -o OUT.xml (NNCF's OpenVINO backend) quantizes per channel"
        )
    return converted, (
        f"opset {version} converted to {PER_CHANNEL_OPSET} in the model handed to NNCF (the int8 model is opset "
        f"{PER_CHANNEL_OPSET}): its ONNX backend quantizes weights per channel only from opset {PER_CHANNEL_OPSET}"
    )


def _names_read(nodes: Sequence[onnx.NodeProto]) -> set[str]:
    """The tensor names ``nodes`` read, with those their subgraphs read from the outer scope."""
    read: set[str] = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        read.update(i for i in node.input if i)
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                stack.extend(sub.node)
    return read
