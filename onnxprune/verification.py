"""Verification with onnxruntime: original and pruned model on the same inputs, every output
compared, graph optimisations off so that the graph itself is what is checked. Each output's
limit follows the reference's own float noise (see the constants below); outputs behind
decisions (TopK, ArgMax, NMS) are verified at the tensors before them (see tails)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from .errors import OnnxPruneError, VerificationFailed
from .fidelity import OutputFidelity, fidelity, fidelity_from_outputs
from .masking import masked_reference
from .quantized import PathSamples, QuantizedCheck, check_quantized, judged_outputs
from .runtime import EXPANDED, paired_outputs, run_model, session
from .tails import Tail, Tails, find_tails, with_outputs
from .verification_inputs import check_run_size, load_npz_inputs, make_inputs

__all__ = [
    "MIN_TOLERANCE",
    "NOISE_MULTIPLE",
    "SCALE_FLOOR",
    "OutputComparison",
    "OutputFidelity",
    "VerificationResult",
    "abs_diff",
    "check_interface",
    "check_run_size",
    "compare_models",
    "failure_text",
    "fidelity",
    "fidelity_from_outputs",
    "limits",
    "load_npz_inputs",
    "make_inputs",
    "masked_reference",
    "one_ulp_away",
    "paired_outputs",
    "run_model",
    "session",
]


# The verification contract (see README "Verification"). A surgery is exact when every output of
# the pruned model is within its limit of the reference's (the original, or the original with
# the removed channels replaced where they are read):
#     limit = max(MIN_TOLERANCE x max(scale, SCALE_FLOOR), NOISE_MULTIPLE x noise floor)
# scale: the output's max abs value in the reference over every sample; noise floor: how far
# the reference moves from itself when only the order of its float sums changes (the same model
# in onnxruntime with all graph optimisations on: fused and blocked kernels), measured on the
# same inputs. A surgery bug moves an output by a channel's contribution, orders of magnitude
# above either term; the tests inject such bugs into models with large noise floors.
MIN_TOLERANCE = 1e-5  # never tighter than 1e-5 x scale: the contract before noise was measured
NOISE_MULTIPLE = 8.0
# Outputs whose values are all near zero (a probability map of an empty page) are computed from
# values of order 1: their float noise does not shrink with them.
SCALE_FLOOR = 1e-2


@dataclass(frozen=True)
class OutputComparison:
    """One output (or a stand-in tensor for a discontinuous one) at one batch size."""

    name: str
    batch: int
    max_abs_diff: float
    mean_abs_diff: float
    scale: float
    limit: float
    noise_floor: float | None = None  # None: not measured (explicit tolerance, or the runtime refused)
    stands_in_for: tuple[str, ...] = ()  # the discontinuous outputs this tensor is verified for
    behind: tuple[str, ...] = ()  # a discontinuous output: the deciding nodes it hangs on
    compared: int = 0  # samples on which it was compared (a discontinuous output: where decisions agreed)
    samples: int = 0
    # Values compared, and how many of them the reference computes as NaN or inf: there the
    # check proves only that the candidate computes the same non-finite value at the same place.
    values: int = 0
    reference_non_finite: int = 0

    @property
    def relative(self) -> float:
        return self.max_abs_diff / self.scale

    @property
    def margin(self) -> float:
        """How many times the difference fits in the limit (inf when it is 0)."""
        return float("inf") if self.max_abs_diff == 0 else self.limit / self.max_abs_diff

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_diff <= self.limit)

    def to_dict(self) -> dict:
        d = {
            "name": self.name,
            "batch": self.batch,
            "max_abs_diff": self.max_abs_diff,
            "mean_abs_diff": self.mean_abs_diff,
            "scale": self.scale,
            "noise_floor": self.noise_floor,
            "limit": self.limit,
            "margin": None if self.max_abs_diff == 0 else self.margin,
            "passed": self.passed,
            "compared_samples": self.compared,
            "samples": self.samples,
            "values": self.values,
            "reference_non_finite": self.reference_non_finite,
        }
        if self.stands_in_for:
            d["stands_in_for"] = list(self.stands_in_for)
        if self.behind:
            d["behind"] = list(self.behind)
        return d


@dataclass(frozen=True)
class VerificationResult:
    """Outcome of comparing two models: passed when every output's max abs diff is within its
    limit (see the module constants: ``tolerance`` x scale, or with ``noise_multiple`` also that
    multiple of the output's measured noise floor)."""

    passed: bool
    tolerance: float
    outputs: tuple[OutputComparison, ...]
    inputs: str  # where the inputs came from
    runtime: str = "onnxruntime (CPU, graph optimisations off)"
    noise_multiple: float | None = None  # None: an explicit tolerance, no noise floor
    noise_runtime: str | None = None  # what the noise floor was measured against, or why not
    tails: tuple[Tail, ...] = ()
    quantized: QuantizedCheck | None = None  # a quantized model: every path it was proved on

    @property
    def non_finite_outputs(self) -> tuple[OutputComparison, ...]:
        """The outputs where the reference itself computes NaN or inf: agreement there (the same
        non-finite value at the same place) proves nothing about the channels behind it."""
        return tuple(o for o in self.outputs if o.reference_non_finite)

    @property
    def worst(self) -> OutputComparison:
        return max(self.outputs, key=lambda o: o.max_abs_diff / o.limit if o.limit > 0 else float("inf"))

    def to_dict(self) -> dict:
        w = self.worst
        return {
            "passed": self.passed,
            "mode": "noise-aware" if self.noise_multiple is not None else "explicit tolerance",
            "tolerance": self.tolerance,
            "noise_multiple": self.noise_multiple,
            "scale_floor": SCALE_FLOOR if self.noise_multiple is not None else None,
            "runtime": self.runtime,
            "noise_runtime": self.noise_runtime,
            "max_abs_diff": w.max_abs_diff,
            "scale": w.scale,
            "noise_floor": w.noise_floor,
            "limit": w.limit,
            "margin": None if w.max_abs_diff == 0 else w.margin,
            "worst_output": w.name,
            "inputs": self.inputs,
            "outputs": [o.to_dict() for o in self.outputs],
            "discontinuous_outputs": [t.to_dict() for t in self.tails],
            "quantized": None if self.quantized is None else self.quantized.to_dict(),
        }


def limits(tolerance: float | None) -> tuple[float, float | None]:
    """(relative tolerance, noise multiple) for compare_models: noise-aware by default (None),
    an explicit tolerance alone otherwise."""
    if tolerance is not None:
        return tolerance, None
    return MIN_TOLERANCE, NOISE_MULTIPLE


def failure_text(result: VerificationResult, reference_kind: str = "original") -> str:
    """Why a verification failed, in one line: the worst output, its difference and its limit."""
    w = result.worst
    what = f"output {w.name!r}"
    if w.stands_in_for:
        what = f"tensor {w.name!r} (verified for the discontinuous output(s) {', '.join(map(repr, w.stands_in_for))})"
    noisy = result.noise_multiple is not None
    scale = (
        f"its scale {w.scale:.3g}"
        if not noisy or w.scale >= SCALE_FLOOR
        else f"the scale floor {SCALE_FLOOR:g} (its scale {w.scale:.3g})"
    )
    if w.noise_floor is not None:
        why = f"its limit {w.limit:.3g} (the larger of {result.tolerance:g} x {scale} and {result.noise_multiple:g} x its noise floor {w.noise_floor:.3g})"
    else:
        why = f"its limit {w.limit:.3g} ({result.tolerance:g} x {scale})"
    return f"{what} (batch {w.batch}) differs from the {reference_kind} by {w.max_abs_diff:.3g}, more than {why}"


def _signature(value: onnx.ValueInfoProto) -> tuple[int, tuple[int | str, ...] | None]:
    """(element type, dims: a size, a symbolic name or '?'; None when the shape is unknown)."""
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return t.elem_type, None
    return t.elem_type, tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)


def _signature_text(sig: tuple[int, tuple[int | str, ...] | None]) -> str:
    kind = onnx.helper.tensor_dtype_to_string(sig[0]).removeprefix("TensorProto.").lower() if sig[0] else "?"
    return kind + ("" if sig[1] is None else f" [{', '.join(map(str, sig[1]))}]")


def _fits(a: tuple[int, tuple[int | str, ...] | None], b: tuple[int, tuple[int | str, ...] | None]) -> bool:
    """Whether two tensor signatures can hold the same values: the same type, and the same
    size where both dimensions are sizes (a symbolic or unknown one fits any)."""
    if a[0] and b[0] and a[0] != b[0]:
        return False
    if a[1] is None or b[1] is None:
        return True
    return len(a[1]) == len(b[1]) and all(
        x == y or not isinstance(x, int) or not isinstance(y, int) or not x or not y for x, y in zip(a[1], b[1])
    )


def check_interface(
    reference: onnx.ModelProto, candidate: onnx.ModelProto, reference_name: str, candidate_name: str
) -> None:
    """Refuse (VerificationFailed naming both models and the tensor) a candidate that does not
    take the reference's inputs or compute its outputs: onnxruntime would only say 'Invalid
    output name' or 'Got invalid dimensions' about one of them."""
    why = "verify compares two models with the same inputs and outputs"

    def listed(values: list[onnx.ValueInfoProto]) -> dict[str, tuple[int, tuple[int | str, ...] | None]]:
        return {v.name: _signature(v) for v in values}

    def inputs(model: onnx.ModelProto) -> dict[str, tuple[int, tuple[int | str, ...] | None]]:
        weights = {i.name for i in model.graph.initializer}
        return listed([v for v in model.graph.input if v.name not in weights])

    for kind, ref, cand, verb in (
        ("input", inputs(reference), inputs(candidate), "reads"),
        ("output", listed(list(reference.graph.output)), listed(list(candidate.graph.output)), "computes"),
    ):
        for name, sig in ref.items():
            if name not in cand:
                has = ", ".join(map(repr, cand)) or "none"
                raise VerificationFailed(
                    f"{candidate_name}: no {kind} {name!r}, which {reference_name} {verb} (its {kind}s: {has}): {why}"
                )
            if not _fits(sig, cand[name]):
                raise VerificationFailed(
                    f"{candidate_name}: {kind} {name!r} is {_signature_text(cand[name])}, "
                    f"in {reference_name} {_signature_text(sig)}: {why}"
                )
        if kind == "input" and (extra := [n for n in cand if n not in ref]):
            raise VerificationFailed(
                f"{candidate_name}: input {extra[0]!r} is no input of {reference_name}, which gives it no value: {why}"
            )


def abs_diff(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Elementwise |reference - candidate|, NaN-aware: the same value (an inf, or NaN on both
    sides) at the same place is 0, a NaN or an inf against anything else is infinite. Plain
    subtraction gives NaN there, and max() over NaN passed a candidate that computes NaN."""
    with np.errstate(invalid="ignore"):
        diff = np.abs(reference - candidate)
    same = (reference == candidate) | (np.isnan(reference) & np.isnan(candidate))
    diff[same] = 0.0
    diff[np.isnan(diff)] = np.inf
    return diff


def compare_models(
    reference: onnx.ModelProto | str,
    candidate: onnx.ModelProto | str,
    feeds_list: Sequence[Mapping[str, np.ndarray]],
    tolerance: float,
    inputs_desc: str,
    source: str = "<model>",
    progress: Callable[[int, int], None] | None = None,
    *,
    noise_multiple: float | None = None,
    form: str | None = None,
) -> VerificationResult:
    """Run both models (in memory, or the paths of saved ones) on every feed and compare every
    output: within ``tolerance`` x its scale, or with ``noise_multiple`` (noise-aware, see the
    module constants) also within that multiple of the reference's own noise floor, measured
    by one more run of the reference per feed with onnxruntime's graph optimisations on and
    the inputs one ulp away (a second pass, once the first two sessions are closed).

    Outputs behind decisions (see ``tails``) are verified at the continuous tensors before the
    decisions, and compared themselves on the feeds where every decision came out equal.

    ``form``: a quantized model's (``quantized.verification_form``); its rounding rule
    (``quantized.check_quantized``) then decides, on the float limit without the noise floor,
    and is kept in the result. Its float path is judged on the runs made here (each model
    runs once per feed); only a QDQ model's integer path (optimisations on) runs again."""
    given = reference, candidate  # a QDQ model's integer path exposes the tails itself
    tails = find_tails(
        reference if isinstance(reference, onnx.ModelProto) else onnx.load(reference, load_external_data=False)
    )
    if tails:
        reference, candidate, tails = _exposed(reference, candidate, tails)
    run_ref = session(reference, source=source)
    run_cand = session(candidate, source=source, pruned=True)
    names = run_ref.output_names
    index = {n: i for i, n in enumerate(names)}
    decisions = {n for t in tails.tails for n in t.decisions}
    stands = {n: tails.stands_in_for(n) for n in names}
    compared = [
        n for n in names if not (n in decisions and not stands[n] and tails.of(n) is None)
    ]  # decisions only gate
    # A quantized model's limit is its rounding rule's: no noise pass (one run per sample saved).
    noise_pass = noise_multiple is not None and form is None
    # Its float path (graph optimisations off) is these two sessions on these feeds: collected
    # here, so that check_quantized does not run both models on every feed again.
    float_path = None if form is None else PathSamples(run_ref.description, judged_outputs(names, tails))
    steps = len(feeds_list) * (2 if noise_pass else 1)
    acc: dict[tuple[str, int], _Accumulator] = {}
    kept: list[list[np.ndarray]] = []  # the reference's outputs, for the noise pass
    for k, feeds in enumerate(feeds_list):
        if progress:
            progress(k, steps)
        batch = _batch(feeds)
        ref, got = run_ref.run(feeds, names), run_cand.run(feeds, names)
        if noise_pass:
            kept.append(ref)
        if float_path is not None:
            float_path.add(dict(zip(names, ref)), dict(zip(names, got)))
        for name in compared:
            i = index[name]
            tail = tails.of(name)
            entry = acc.setdefault((name, batch), _Accumulator())
            entry.samples += 1
            r64 = np.asarray(ref[i], dtype=np.float64)
            finite = np.abs(r64[np.isfinite(r64)])  # an inf or NaN is no scale (an inf one passes anything)
            entry.scale = max(entry.scale, float(finite.max()) if finite.size else 0.0)
            if tail is not None and not all(np.array_equal(ref[index[d]], got[index[d]]) for d in tail.decisions):
                continue  # compared only where every decision it hangs on agrees
            entry.compared += 1
            g64 = np.asarray(got[i], dtype=np.float64)
            if r64.shape != g64.shape:
                entry.diff = entry.mean = np.inf
                continue
            entry.values += r64.size
            entry.non_finite += int(r64.size - np.count_nonzero(np.isfinite(r64)))
            diff = abs_diff(r64, g64)
            entry.diff = max(entry.diff, float(diff.max()) if diff.size else 0.0)
            entry.mean = max(entry.mean, float(diff.mean()) if diff.size else 0.0)
    expanded = run_ref.expanded
    del run_ref, run_cand  # the noise pass opens one session: never three models at once
    measured, noise_runtime = False, None
    if noise_multiple is not None and not noise_pass:
        noise_runtime = "not measured: a quantized model is judged by its rounding rule"
    elif noise_pass:
        try:
            run_noise = session(reference, source=source, optimize=True)
            for k, (feeds, ref) in enumerate(zip(feeds_list, kept)):
                if progress:
                    progress(len(feeds_list) + k, steps)
                noise = run_noise.run(one_ulp_away(feeds, k), names)
                for name in compared:
                    tail = tails.of(name)
                    if tail is not None and not all(
                        np.array_equal(ref[index[d]], noise[index[d]]) for d in tail.decisions
                    ):
                        continue
                    r, z = ref[index[name]], noise[index[name]]
                    if np.shape(z) == np.shape(r) and np.size(r):
                        entry = acc[(name, _batch(feeds))]
                        with np.errstate(invalid="ignore"):  # inf - inf
                            moved = np.abs(np.asarray(r, np.float64) - np.asarray(z, np.float64))
                        moved = moved[np.isfinite(moved)]  # non-finite values set no noise floor
                        entry.noise = max(entry.noise or 0.0, float(moved.max()) if moved.size else 0.0)
            measured = True
            noise_runtime = f"{_runtime_name()} with all graph optimisations on, inputs one ulp away (the same reference: its float sums reordered)"
        except OnnxPruneError as exc:  # an optimiser failure costs the noise floor, not the check
            noise_runtime = f"not measured: {exc}"
    if progress:
        progress(steps, steps)
    noisy = noise_multiple is not None
    outs = []
    for (name, batch), e in acc.items():
        scale = e.scale if e.scale > 0 else 1.0
        noise_floor = e.noise if measured else None
        limit = tolerance * (max(scale, SCALE_FLOOR) if noisy else scale)
        if noisy and noise_floor is not None:
            limit = max(limit, noise_multiple * noise_floor)
        tail = tails.of(name)
        outs.append(
            OutputComparison(
                name,
                batch,
                e.diff,
                e.mean,
                scale,
                limit,
                noise_floor,
                stands_in_for=stands[name],
                behind=tail.ops if tail else (),
                compared=e.compared,
                samples=e.samples,
                values=e.values,
                reference_non_finite=e.non_finite,
            )
        )
    passed = all(o.passed for o in outs)
    quantized = None
    if form is not None:  # rounding flips, not float noise, move it: the float limit without the noise floor
        quantized = check_quantized(
            form,
            *given,
            feeds_list,
            lambda _name, scale: tolerance * max(scale, SCALE_FLOOR),
            source,
            float_path=float_path,
        )
        passed = quantized.passed
    return VerificationResult(
        passed=passed,
        tolerance=tolerance,
        outputs=tuple(outs),
        inputs=inputs_desc,
        runtime=f"{_runtime_name()} with graph optimisations off" + (f", {EXPANDED}" if expanded else ""),
        noise_multiple=noise_multiple,
        noise_runtime=noise_runtime,
        tails=tails.tails,
        quantized=quantized,
    )


def one_ulp_away(feeds: Mapping[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """The feeds with every float moved by one ulp, up or down at random (seeded): a change
    below the data's own resolution, which a badly conditioned model amplifies like its
    rounding errors."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, x in feeds.items():
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.floating):
            up = rng.integers(0, 2, x.shape).astype(bool)
            x = np.nextafter(x, np.where(up, np.inf, -np.inf).astype(x.dtype))
        out[name] = x
    return out


def _batch(feeds: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()), None)
    return first.shape[0] if first is not None and first.ndim else 1


class _Accumulator:
    """Running figures of one output at one batch size over the feeds."""

    def __init__(self) -> None:
        self.diff = self.mean = self.scale = 0.0
        self.noise: float | None = None
        self.compared = self.samples = self.values = self.non_finite = 0


def _runtime_name() -> str:
    try:
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__} CPU"
    except ImportError:  # pragma: no cover - session() has said so already
        return "onnxruntime"


def _exposed(
    reference: onnx.ModelProto | str, candidate: onnx.ModelProto | str, tails: Tails
) -> tuple[onnx.ModelProto, onnx.ModelProto, Tails]:
    """Copies of both models with the tails' stand-in and decision tensors as extra outputs.
    A tail whose tensors the candidate does not compute is dropped: its output is compared as
    it is."""
    ref = reference if isinstance(reference, onnx.ModelProto) else onnx.load(reference)
    cand = candidate if isinstance(candidate, onnx.ModelProto) else onnx.load(candidate)
    kept = tails.computed_by(cand)
    extra = kept.extra_outputs
    return with_outputs(ref, extra), with_outputs(cand, extra), kept
