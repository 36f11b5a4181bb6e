"""Verification of quantized models (QDQ and OpenVINO FakeQuantize, as NNCF exports int8).

A quantized model rounds every activation to a step. Where a value lies on the edge of a
step, a float sum taken in another order (fewer channels after pruning, another kernel) moves
it to the neighbouring step: one element, one step, one sample; downstream the output moves
by that step's contribution (measured on NNCF's MobileNetV2: 0.4% of the logits' scale, on 2
of 540 digits). That is not a surgery bug, which moves every sample by a channel's worth. So
on a quantized model an output passes when it is within the float limit, or when its
differences are *isolated rounding flips*, stated explicitly:

- at most ``FLIP_SHARE`` of the samples (at least one) go past the float limit, and
- none of them by more than ``FLIP_LIMIT`` x the output's scale.

QDQ models are verified on two paths: the float emulation (graph optimisations off: every
QuantizeLinear/DequantizeLinear as written) and the integer path onnxruntime deploys (all
optimisations on: QLinearConv, QGemm...). Each must pass; a flip on the float path alone is
not a failure. FakeQuantize models run as their standard-ops expansion (see fake_quantize),
which is their float path (onnxruntime has no integer path for them).

Dynamically quantized models (onnxruntime's ``quantize_dynamic``: DynamicQuantizeLinear ->
ConvInteger/MatMulInteger) are not a ``quantization_form`` (nothing in the file fixes their
activations' steps) but are verified by the same rule (``verification_form``: "dynamic"), on
their one (integer) path, where a correct surgery leaves them bit for bit equal: integer sums do
not depend on their order, and the run-time scale is taken with 0, so a removed zero channel
never moves it. The float noise floor must not set their limit: one ulp at a
DynamicQuantizeLinear flips a step, which the later layers' run-time quantization carries on
(the corpus's DBNet: 0.92 x the scale on 0.4% of its pixels, onnxruntime against itself), so a
limit of 8 x that floor passes a zeroed filter (0.93 x the scale, measured). ``dynamic_noise``
measures how far onnxruntime moves from itself that way, for the OpenVINO IR check (openvino_ir).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from .fake_quantize import is_fake_quantize
from .runtime import session
from .tails import Tails, find_tails, with_outputs

__all__ = [
    "FLIP_LIMIT",
    "FLIP_SHARE",
    "QUANTIZED_SAMPLES",
    "DynamicNoise",
    "PathCheck",
    "PathSamples",
    "QuantizedCheck",
    "check_quantized",
    "dynamic_noise",
    "is_dynamically_quantized",
    "judged_outputs",
    "nudged",
    "quantization_form",
    "verification_form",
]

FLIP_LIMIT = 0.02  # of the output's scale: 5x the largest flip measured on the NNCF exports
FLIP_SHARE = 0.25  # of the samples
QUANTIZED_SAMPLES = 8  # random verification samples of a quantized model (flips are rare per sample)

Feeds = Mapping[str, np.ndarray]
LimitFn = Callable[[str, float], float]  # (output name, scale) -> the output's float limit


def quantization_form(model: onnx.ModelProto) -> str | None:
    """ "FakeQuantize" or "QDQ" when activations are quantized (a quantizer reads a non-constant
    tensor), else None."""
    produced = {o: n for n in model.graph.node for o in n.output}
    consts = {i.name for i in model.graph.initializer}

    def constant(name: str, depth: int = 0) -> bool:
        if name in consts:
            return True
        node = produced.get(name)
        if node is None or depth > 8:
            return False
        if node.op_type == "Constant":
            return True
        return node.op_type in ("Identity", "QuantizeLinear", "DequantizeLinear") and constant(node.input[0], depth + 1)

    form = None
    for n in model.graph.node:
        if is_fake_quantize(n.op_type, n.domain) and not constant(n.input[0]):
            return "FakeQuantize"
        if n.op_type == "QuantizeLinear" and (n.domain or "") in ("", "ai.onnx") and not constant(n.input[0]):
            form = "QDQ"
    return form


def verification_form(model: onnx.ModelProto) -> str | None:
    """The form whose rounding rule verifies ``model``: its ``quantization_form``, "dynamic"
    when a DynamicQuantizeLinear quantizes a run-time tensor, else None (float: the noise-aware
    limit alone)."""
    return quantization_form(model) or ("dynamic" if is_dynamically_quantized(model) else None)


def is_dynamically_quantized(model: onnx.ModelProto) -> bool:
    """True when a DynamicQuantizeLinear quantizes a run-time tensor (``quantize_dynamic``)."""
    consts = {i.name for i in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == "Constant" for o in n.output
    }
    return any(
        n.op_type == "DynamicQuantizeLinear" and (n.domain or "") in ("", "ai.onnx") and n.input[0] not in consts
        for n in model.graph.node
    )


def nudged(model: onnx.ModelProto, factor: float) -> onnx.ModelProto:
    """A copy of ``model`` with the input of every DynamicQuantizeLinear multiplied by
    ``factor`` (1 +- 2^-23: each value moved by one or two ulps, where another runtime's
    kernels may round it otherwise)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    taken = {t for n in out.graph.node for t in (*n.input, *n.output)} | {i.name for i in out.graph.initializer}
    name = "onnxprune_nudge"
    while name in taken:
        name += "_"
    out.graph.initializer.append(onnx.numpy_helper.from_array(np.array(factor, np.float32), name))
    nodes = []
    for i, n in enumerate(out.graph.node):
        if n.op_type == "DynamicQuantizeLinear" and (n.domain or "") in ("", "ai.onnx"):
            moved = f"{name}_{i}"
            nodes.append(onnx.helper.make_node("Mul", [n.input[0], name], [moved], name=moved))
            n.input[0] = moved
        nodes.append(n)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


@dataclass(frozen=True)
class DynamicNoise:
    """onnxruntime against itself on a dynamically quantized model, per output: the noise floor
    (largest difference of any noise run) and the most elements any one run moved past the
    threshold the caller gave."""

    runtime: str
    floor: Mapping[str, float]
    past: Mapping[str, int]


def dynamic_noise(
    model: onnx.ModelProto,
    feeds_list: Sequence[Feeds],
    references: Sequence[Mapping[str, np.ndarray]],
    threshold_of: Callable[[str, int], float],
    source: str = "<model>",
) -> DynamicNoise:
    """Three runs of ``model`` per feed against ``references`` (its outputs by name, graph
    optimisations off): all optimisations on with the inputs one ulp away (the pruning
    verification's noise run), and every DynamicQuantizeLinear input one ulp up, then down.
    ``threshold_of(output, feed index)``: the difference that counts an element as moved.
    One session at a time."""
    from .verification import one_ulp_away

    up = float(np.float32(1) + np.float32(2.0**-23))
    down = float(np.float32(1) - np.float32(2.0**-23))
    runs = [(model, True, True), (nudged(model, up), False, False), (nudged(model, down), False, False)]
    floor: dict[str, float] = {}
    past: dict[str, int] = {}
    for candidate, optimize, move_inputs in runs:
        run = session(candidate, source=source, optimize=optimize)
        counts: dict[str, int] = {}
        for k, (feeds, ref) in enumerate(zip(feeds_list, references)):
            got = run.run(one_ulp_away(feeds, k) if move_inputs else feeds, list(ref))
            for (name, r), z in zip(ref.items(), got):
                r64, z64 = np.asarray(r, np.float64), np.asarray(z, np.float64)
                counts.setdefault(name, 0)
                if r64.shape != z64.shape or not r64.size:
                    continue
                d = np.abs(r64 - z64)
                floor[name] = max(floor.get(name, 0.0), float(d.max()))
                counts[name] += int(np.count_nonzero(d > threshold_of(name, k)))
        del run
        for name, c in counts.items():
            past[name] = max(past.get(name, 0), c)
    import onnxruntime

    return DynamicNoise(
        f"onnxruntime {onnxruntime.__version__} CPU: all graph optimisations on with the inputs one ulp away, and every DynamicQuantizeLinear "
        "input one ulp up, then down (the same model, its run-time quantization fed as another runtime may round)",
        floor,
        past,
    )


@dataclass(frozen=True)
class PathCheck:
    """One execution path of a quantized model: original (or its masked reference) against the
    pruned model, per output the worst difference and how many samples went past the float
    limit (each an isolated rounding flip when the path passed with them)."""

    runtime: str
    passed: bool
    max_abs_diff: float
    scale: float
    worst_output: str
    samples: int
    flipped_samples: int
    limit: float = 0.0  # the worst output's float limit (at its scale): what a flip goes past

    def to_dict(self) -> dict:
        return {
            "runtime": self.runtime,
            "passed": self.passed,
            "max_abs_diff": self.max_abs_diff,
            "scale": self.scale,
            "worst_output": self.worst_output,
            "samples": self.samples,
            "samples_past_float_limit": self.flipped_samples,
            "float_limit": self.limit,
        }


@dataclass(frozen=True)
class QuantizedCheck:
    """How a quantized model was proved: its form, the rule, and every path checked."""

    form: str
    paths: tuple[PathCheck, ...]
    flip_limit: float = FLIP_LIMIT
    flip_share: float = FLIP_SHARE

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.paths)

    @property
    def rule(self) -> str:
        return (
            f"within the float limit, or isolated rounding flips: at most {self.flip_share:.0%} of the samples "
            f"(at least one) past it, each by at most {self.flip_limit:g} x the output's scale"
        )

    def failure(self) -> PathCheck | None:
        return next((p for p in self.paths if not p.passed), None)

    def to_dict(self) -> dict:
        return {
            "form": self.form,
            "rule": self.rule,
            "flip_limit": self.flip_limit,
            "flip_share": self.flip_share,
            "paths": [p.to_dict() for p in self.paths],
        }


class PathSamples:
    """One path's run of both models over the feeds, reduced to what the rounding rule judges:
    per output, each sample's max abs diff (inf where the shapes differ) and the reference's
    max abs value over the samples whose shapes agreed. Filled by ``add`` once per feed, by
    ``check_quantized`` itself or by a caller that runs the same two sessions anyway (the
    pruning verification: see ``compare_models``), so that no model runs twice on a feed."""

    def __init__(self, runtime: str, names: Sequence[str]) -> None:
        self.runtime = runtime  # the sessions' description: the path's name in the report
        self.names = tuple(names)  # the outputs judged, in the sessions' order (ties of the worst go to the last)
        self.diffs: dict[str, list[float]] = {n: [] for n in self.names}
        self.scales: dict[str, float] = {n: 0.0 for n in self.names}
        self.samples = 0

    def add(self, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> None:
        """One feed's outputs of both models, by name (extra names are ignored)."""
        self.samples += 1
        for name in self.names:
            r64 = np.asarray(reference[name], dtype=np.float64)
            g64 = np.asarray(candidate[name], dtype=np.float64)
            if r64.shape != g64.shape:
                self.diffs[name].append(np.inf)
                continue
            self.diffs[name].append(float(np.abs(r64 - g64).max()) if r64.size else 0.0)
            self.scales[name] = max(self.scales[name], float(np.abs(r64).max()) if r64.size else 0.0)


def judged_outputs(names: Sequence[str], tails: Tails) -> list[str]:
    """The outputs (of sessions with the tails' tensors exposed) that the rounding rule judges:
    all but the discontinuous ones and the decisions themselves. ``tails``: those whose tensors
    the candidate computes (the others' outputs are compared as they are)."""
    skip = {n for t in tails.tails for n in (t.output, *t.decisions)}
    return [n for n in names if n not in skip]


def check_quantized(
    form: str,
    reference: onnx.ModelProto | str,
    candidate: onnx.ModelProto | str,
    feeds_list: Sequence[Feeds],
    limit_of: LimitFn,
    source: str = "<model>",
    *,
    float_path: PathSamples | None = None,
) -> QuantizedCheck:
    """Every path of a ``form`` model (see the module doc), ``limit_of(output name, scale)``
    giving the float limit of each output. Outputs behind decisions (TopK, ArgMax, NMS: see
    tails) are judged at the continuous tensors before them: a flip may flip a decision.
    ``float_path``: the float path's samples, already collected on ``feeds_list`` by the
    caller (graph optimisations off, the tails' tensors exposed, ``judged_outputs``); the
    float path is then judged from them instead of being run again."""
    if float_path is not None and form != "QDQ":
        return QuantizedCheck(form, (_judged(float_path, limit_of),))  # nothing else to run
    reference, candidate, tails = _without_decisions(reference, candidate)
    if float_path is None:
        float_path = _collected(reference, candidate, feeds_list, source, tails, optimize=False)
    paths = [_judged(float_path, limit_of)]
    if form == "QDQ":
        optimized = _collected(reference, candidate, feeds_list, source, tails, optimize=True)
        paths.append(_judged(optimized, limit_of))
    return QuantizedCheck(form, tuple(paths))


def _without_decisions(
    reference: onnx.ModelProto | str, candidate: onnx.ModelProto | str
) -> tuple[onnx.ModelProto | str, onnx.ModelProto | str, Tails]:
    """Both models with the tensors before their decisions as extra outputs, and the tails
    kept (those whose tensors the candidate computes); unchanged without tails."""
    ref = reference if isinstance(reference, onnx.ModelProto) else onnx.load(reference, load_external_data=False)
    tails = find_tails(ref)
    if not tails:
        return reference, candidate, tails
    ref = reference if isinstance(reference, onnx.ModelProto) else onnx.load(reference)
    cand = candidate if isinstance(candidate, onnx.ModelProto) else onnx.load(candidate)
    kept = tails.computed_by(cand)
    extra = tuple(dict.fromkeys(n for t in kept.tails for n in t.frontier))
    return with_outputs(ref, extra), with_outputs(cand, extra), kept


def _collected(
    reference: onnx.ModelProto | str,
    candidate: onnx.ModelProto | str,
    feeds_list: Sequence[Feeds],
    source: str,
    tails: Tails,
    *,
    optimize: bool,
) -> PathSamples:
    """Both models run on every feed on one path (one session each)."""
    run_ref = session(reference, source=source, optimize=optimize)
    run_cand = session(candidate, source=source, pruned=True, optimize=optimize)
    samples = PathSamples(run_ref.description, judged_outputs(run_ref.output_names, tails))
    names = list(samples.names)
    for feeds in feeds_list:
        samples.add(dict(zip(names, run_ref.run(feeds, names))), dict(zip(names, run_cand.run(feeds, names))))
    return samples


def _judged(samples: PathSamples, limit_of: LimitFn) -> PathCheck:
    """The rounding rule (see the module doc) on one path's samples."""
    names, n = samples.names, samples.samples
    allowed = max(1, int(FLIP_SHARE * n))
    passed, flipped, worst = True, 0, (0.0, 1.0, names[0] if names else "")
    for name in names:
        scale = samples.scales[name] if samples.scales[name] > 0 else 1.0
        d = np.asarray(samples.diffs[name])
        past = d > limit_of(name, scale)
        flipped = max(flipped, int(past.sum()))
        if past.sum() > allowed or np.any(d > FLIP_LIMIT * scale):
            passed = False
        top = float(d.max()) if d.size else 0.0
        if top / scale >= worst[0] / worst[1]:
            worst = (top, scale, name)
    top, scale, name = worst
    limit = limit_of(name, scale) if name else 0.0
    return PathCheck(samples.runtime, passed, top, scale, name, n, flipped, limit)
