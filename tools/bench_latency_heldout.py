"""More held-out inputs for the latency benchmark's top-1 rows (the table classifier, with and
without --reconstruct): prune's fidelity there is top-1 agreement on the row's 16 evaluation
samples, where one flip moves it by 0.0625 and two plans one sample apart read "worse". This
scores the latency plan and its matched MACs plan on many more realistic inputs
(``tools/corpus_inputs.py`` at other seeds than the calibration's 1 and the evaluation's 2),
paired: the same inputs, and the samples only one of the two gets right (a paired difference
smaller than its noise is a tie). Inference only (onnxruntime CPU): nothing is timed."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SEEDS_FROM", "heldout_phase", "heldout_row", "paired_labelled", "paired_top1", "save_rows"]

# corpus_inputs seeds of the extra inputs: the calibration file is seed 1, the evaluation file seed 2
SEEDS_FROM = 3
BATCH = 32  # inputs made per seed


def _outputs(path: str, name: str, batches: Iterable[np.ndarray]) -> np.ndarray:
    """The model's first output for every input, one row per input (run one input at a time:
    the corpus models are exported for batch 1)."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rows = [session.run(None, {name: x[i : i + 1]})[0].reshape(1, -1) for x in batches for i in range(len(x))]
    return np.concatenate(rows)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-input cosine of two outputs (rows); 0 where either row is all zeros."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    return float(np.mean(np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)))


def paired_top1(original: str, latency: str, macs: str, name: str, batches: list[np.ndarray]) -> dict[str, Any]:
    """Top-1 agreement with ``original`` of the ``latency`` and ``macs`` plans on the same
    inputs (``batches`` of input ``name``): each plan's agreement and output cosine, and how many
    inputs only one of the two plans gets right (``only_latency``, ``only_macs``)."""
    ref = _outputs(original, name, batches)
    top = ref.argmax(axis=1)
    result: dict[str, Any] = {"n": len(top)}
    right = {}
    for key, path in (("latency", latency), ("macs", macs)):
        out = _outputs(path, name, batches)
        right[key] = out.argmax(axis=1) == top
        result[key] = {"top1": float(right[key].mean()), "agree": int(right[key].sum()), "cosine": _cosine(out, ref)}
    result["only_latency"] = int((right["latency"] & ~right["macs"]).sum())
    result["only_macs"] = int((right["macs"] & ~right["latency"]).sum())
    return result


def _batched(path: str, name: str, x: np.ndarray, batch: int = 32) -> np.ndarray:
    """The model's first output for ``x`` in batches (a model exported with a dynamic batch)."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def paired_labelled(
    original: str, latency: str, macs: str, name: str, x: np.ndarray, labels: np.ndarray
) -> dict[str, Any]:
    """The original, the ``latency`` plan and the ``macs`` plan on the same labelled inputs ``x``:
    each one's top-1 accuracy against ``labels``; each plan's top-1 agreement with the original
    and output cosine; how many inputs only one of the two plans classifies right."""
    ref = _batched(original, name, x)
    result: dict[str, Any] = {"n": len(labels), "original": {"accuracy": float((ref.argmax(1) == labels).mean())}}
    right = {}
    for key, path in (("latency", latency), ("macs", macs)):
        out = _batched(path, name, x)
        right[key] = out.argmax(1) == labels
        result[key] = {
            "accuracy": float(right[key].mean()),
            "top1": float((out.argmax(1) == ref.argmax(1)).mean()),
            "cosine": _cosine(out, ref),
        }
    result["only_latency"] = int((right["latency"] & ~right["macs"]).sum())
    result["only_macs"] = int((right["macs"] & ~right["latency"]).sum())
    return result


def heldout_row(row: dict, spec: dict, n: int, make: Callable[[str, int, int], dict] | None = None) -> dict[str, Any]:
    """``paired_top1`` of a benchmark row's latency plan and its (final) matched MACs plan on
    ``n`` inputs (rounded up to whole seeds of ``BATCH``), made by ``make(model file name,
    count, seed)`` (default: corpus_inputs.feeds), seeds from ``SEEDS_FROM``."""
    if spec.get("kind") == "trained":  # labelled: tools/glyph_task.py at seed SEEDS_FROM (never trained on)
        from glyph_task import glyph_images

        x, labels = glyph_images(n, SEEDS_FROM, spec["shape"][2])
        result = paired_labelled(
            spec["path"], row["latency_plan"]["file"], row["macs_plan"]["file"], spec["input"], x, labels
        )
        return {
            **result,
            "seeds": [SEEDS_FROM, SEEDS_FROM],
            "labelled": True,
            "macs_target": row["macs_plan"]["macs_target"],
        }
    if make is None:
        from corpus_inputs import feeds as make
    seeds = range(SEEDS_FROM, SEEDS_FROM + max(-(-n // BATCH), 1))
    base = os.path.basename(spec["path"])
    batches = [np.asarray(make(base, BATCH, s)[spec["input"]], np.float32) for s in seeds]
    result = paired_top1(spec["path"], row["latency_plan"]["file"], row["macs_plan"]["file"], spec["input"], batches)
    return {**result, "seeds": [seeds.start, seeds.stop - 1], "macs_target": row["macs_plan"]["macs_target"]}


def save_rows(state: Path, rows: dict[str, dict]) -> None:
    """The benchmark's rows to its ``state`` file, atomically: written to a temporary file in the
    same folder, then renamed over it (a run stopped mid-write leaves the previous rows whole)."""
    state = Path(state)
    tmp = state.with_name(f".{state.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(list(rows.values()), indent=2, default=str))
        os.replace(tmp, state)
    finally:
        tmp.unlink(missing_ok=True)


def heldout_phase(
    names: list[str],
    rows: dict[str, dict],
    state: Path,
    model_spec: Callable[[str], dict],
    make: Callable[[str, int, int], dict] | None = None,
) -> None:
    """bench_latency's ``heldout`` phase: ``heldout_row`` of each named row whose spec asks for
    it (``heldout``: how many inputs; ``make`` as there), saved to the rows' ``state`` file after each."""
    for name in names:
        spec = model_spec(name)
        if name in rows and spec.get("heldout"):
            print(f"[heldout] {name}", flush=True)
            rows[name]["heldout"] = heldout_row(rows[name], spec, spec["heldout"], make)
            save_rows(state, rows)
