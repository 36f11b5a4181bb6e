"""The report of an int8 quantization run, as data (``to_dict`` is the JSON the CLI writes) and
as text and Markdown lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import QUANTIZE_NAMES, Message, in_words
from .fidelity import OutputFidelity, OutputScore

# The first key of the report as JSON (its "model_format" is the int8 model's: onnx or ir).
QUANTIZE_REPORT_FORMAT = "onnxprune-quantize-report/1"

__all__ = [
    "QUANTIZE_REPORT_FORMAT",
    "AccuracyControl",
    "FidelityAgainst",
    "QuantizeReport",
    "format_joint",
    "format_quantize",
    "quantize_markdown",
]


@dataclass(frozen=True)
class FidelityAgainst:
    """The int8 model's outputs against a float model's, on the held-out samples."""

    reference: str  # "float model" (the model quantized) or "original" (before pruning)
    score: float  # the worst output's metric (see fidelity.score_outputs)
    scores: tuple[OutputScore, ...]
    outputs: tuple[OutputFidelity, ...]

    def to_dict(self) -> dict:
        return {
            "reference": self.reference,
            "score": self.score,
            "metrics": {s.name: {"metric": s.metric, "value": s.value, "reason": s.reason} for s in self.scores},
            "outputs": [o.to_dict() for o in self.outputs],
        }


@dataclass(frozen=True)
class AccuracyControl:
    """NNCF's quantize_with_accuracy_control: the drop allowed and what it kept in float."""

    max_drop: float
    metric: str
    float_value: float
    int8_value: float
    drop_type: str = "absolute"  # or "relative": a fraction of the float model's value
    calls: int | None = None  # the user's validation function: how many times it ran

    def to_dict(self) -> dict:
        return {
            "max_drop": self.max_drop,
            "metric": self.metric,
            "float_value": self.float_value,
            "int8_value": self.int8_value,
            "drop_type": self.drop_type,
            "calls": self.calls,
        }


@dataclass(frozen=True)
class QuantizeReport:
    model: str
    output: str | None
    format: str  # "onnx" (QDQ) or "ir" (OpenVINO FakeQuantize)
    backend: str  # the NNCF backend that quantized
    preset: str
    fast_bias_correction: bool
    subset_size: int
    calibration_samples: int
    evaluation_samples: int
    evaluation: str  # where the held-out samples come from
    quantized_layers: tuple[str, ...]
    float_layers: tuple[str, ...]
    ignored: tuple[str, ...]  # ONNX node names the ignored scope selected
    runtime: str  # what ran the int8 model for the fidelity figures
    fidelity: tuple[FidelityAgainst, ...]
    size_before: int
    size_after: int | None
    accuracy_control: AccuracyControl | None = None
    notes: tuple[str, ...] = field(default=())
    # the weighted nodes whose weights were stored as int8 x scale (Cast -> Mul) and were
    # folded to float32 for NNCF (quantization.fold_cast_weights), which quantized them again
    folded_weights: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        # Texts in the command line's words, read in the API's (see errors.Message).
        object.__setattr__(self, "evaluation", Message(self.evaluation, QUANTIZE_NAMES))
        object.__setattr__(self, "notes", tuple(Message(n, QUANTIZE_NAMES) for n in self.notes))

    def to_json(self, words: str = "api", **options: Any) -> str:
        """``to_dict(words)`` as strict JSON text, as the CLI writes it: a NaN or infinite number
        (a model whose outputs are NaN) is null (``json.dumps`` would write a bare NaN, which
        is not JSON). ``options`` go to ``json.dumps`` (e.g. ``indent=2``)."""
        from .render import json_text

        return json_text(self.to_dict(words), **options)

    def to_dict(self, words: str = "api") -> dict:
        """The report as plain data; its texts (notes, evaluation) name QuantizeConfig's options
        (``words="api"``) or the command line's flags (``"cli"``), as the CLI writes them."""
        data = self._data()
        for key in ("evaluation", "notes"):
            data[key] = in_words(data[key], words, QUANTIZE_NAMES)
        return data

    def _data(self) -> dict:
        return {
            "format": QUANTIZE_REPORT_FORMAT,
            "model": self.model,
            "output": self.output,
            "model_format": self.format,
            "backend": self.backend,
            "preset": self.preset,
            "fast_bias_correction": self.fast_bias_correction,
            "subset_size": self.subset_size,
            "calibration_samples": self.calibration_samples,
            "evaluation_samples": self.evaluation_samples,
            "evaluation": self.evaluation,
            "quantized_layers": list(self.quantized_layers),
            "float_layers": list(self.float_layers),
            "ignored_scope": list(self.ignored),
            "runtime": self.runtime,
            "fidelity": [f.to_dict() for f in self.fidelity],
            "size_before": self.size_before,
            "size_after": self.size_after,
            "accuracy_control": None if self.accuracy_control is None else self.accuracy_control.to_dict(),
            "notes": list(self.notes),
            "folded_weights": list(self.folded_weights),
        }


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def _figure(f: dict) -> str:
    parts = []
    for o in f["outputs"]:
        top1 = "" if o["top1_agreement"] is None else f", top-1 agreement {_pct(o['top1_agreement'])}"
        metric = f"{o['metric']} {o['score']:.4f} ({o['metric_reason']}), " if o.get("metric") else ""
        parts.append(f"{o['name']}: {metric}cosine {o['cosine']:.4f}{top1}, max abs err {o['max_abs_error']:.3g}")
    return "; ".join(parts)


def format_quantize(d: dict) -> str:
    """The human-readable form of a quantization report (its JSON dict)."""
    what = "QDQ ONNX" if d["model_format"] == "onnx" else "OpenVINO IR"
    lines = [
        (
            f"{d['model']} -> {d.get('output') or '(not written)'}   int8 ({what}, NNCF {d['backend']} backend, preset {d['preset']}, "
            f"fast bias correction {'on' if d['fast_bias_correction'] else 'off'})"
        ),
        f"calibration: {d['calibration_samples']} samples (subset size {d['subset_size']}); evaluation: {d['evaluation']}",
        f"layers in int8: {len(d['quantized_layers'])}, in float: {len(d['float_layers'])}"
        + (
            f" ({', '.join(d['float_layers'][:6])}{', ...' if len(d['float_layers']) > 6 else ''})"
            if d["float_layers"]
            else ""
        ),
    ]
    if d["size_after"]:
        lines.append(
            f"size: {d['size_before']:,} -> {d['size_after']:,} bytes ({d['size_after'] / d['size_before']:.2f}x)"
        )
    if d.get("accuracy_control"):
        a = d["accuracy_control"]
        drop = f"{a['max_drop'] * 100:g}%" if a.get("drop_type") == "relative" else f"{a['max_drop']:g}"
        calls = f" ({a['calls']} calls)" if a.get("calls") is not None else ""
        lines.append(
            f"accuracy control: max drop {drop} of {a['metric']}: float {a['float_value']:.6g}, int8 {a['int8_value']:.6g}{calls}"
        )
    lines.append(f"fidelity on the held-out samples ({d['runtime']}):")
    for f in d["fidelity"]:
        lines.append(f"  vs the {f['reference']}: {f['score']:.4f}  ({_figure(f)})")
    for note in d["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def quantize_markdown(d: dict) -> list[str]:
    """A Markdown section for a quantization report."""
    lines = ["## int8 quantization (NNCF)", ""]
    lines.append(
        f"{'QDQ ONNX' if d['model_format'] == 'onnx' else 'OpenVINO IR'} `{d.get('output')}`, NNCF {d['backend']} backend, preset {d['preset']}, "
        f"fast bias correction {'on' if d['fast_bias_correction'] else 'off'}; {d['calibration_samples']} calibration samples; "
        f"evaluation: {d['evaluation']}; layers in int8 {len(d['quantized_layers'])}, in float {len(d['float_layers'])}."
    )
    lines += [
        "",
        f"Fidelity on the held-out samples ({d['runtime']}):",
        "",
        "| against | fidelity | per output |",
        "|---|---:|---|",
    ]
    for f in d["fidelity"]:
        lines.append(f"| {f['reference']} | {f['score']:.4f} | {_figure(f)} |")
    for note in d["notes"]:
        lines.append(f"\nNote: {note}")
    return lines


def format_joint(d: dict) -> str:
    """The int8-aware fidelity budget's steps (joint.JointResult.to_dict), as text."""
    lines = [
        f"fidelity budget met by the int8 model: target {d['target']:g} on the {d['samples']} ({'met' if d['met'] else 'NOT met'})"
    ]
    for i, s in enumerate(d["steps"], 1):
        lines.append(
            f"  step {i}: pruned to --min-fidelity {s['min_fidelity']:.4f}: MACs x{s['macs_ratio']:.3f}, "
            f"pruned float {s['pruned_fidelity']:.4f}, int8 {s['int8_fidelity']:.4f}"
        )
    return "\n".join(lines)
