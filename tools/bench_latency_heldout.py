"""More held-out inputs for the latency benchmark's top-1 rows (the table classifier, with and
without --reconstruct): prune's fidelity there is top-1 agreement on the row's 16 evaluation
samples, where one flip moves it by 0.0625 and two plans one sample apart read "worse". This
scores the latency plan and its matched MACs plan on many more realistic inputs
(``tools/corpus_inputs.py`` at other seeds than the calibration's 1 and the evaluation's 2),
paired: the same inputs, and the samples only one of the two gets right (a paired difference
smaller than its noise is a tie). The detector's rows (YOLO26n) the same way with prune's detection
score per input (``paired_detection``). Inference only (onnxruntime CPU): nothing is timed; the
inputs can be made beforehand and kept (``cached_make``: rendering a detector's pages takes longer
than running it)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SEEDS_FROM",
    "cached_make",
    "heldout_inputs_phase",
    "heldout_phase",
    "heldout_row",
    "paired_detection",
    "paired_labelled",
    "paired_top1",
    "save_rows",
]

# corpus_inputs seeds of the extra inputs: the calibration file is seed 1, the evaluation file seed 2
SEEDS_FROM = 3
BATCH = 32  # inputs made per seed


def _outputs(path: str, name: str, batches: Iterable[np.ndarray], flat: bool = True) -> np.ndarray:
    """The model's first output for every input, one row per input (run one input at a time:
    the corpus models are exported for batch 1); ``flat=False``: each input's output as it is
    (a detector's [K, 6] rows)."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rows = [
        session.run(None, {name: np.ascontiguousarray(x[i : i + 1], np.float32)})[0]
        for x in batches
        for i in range(len(x))
    ]
    return np.concatenate([r.reshape(1, -1) for r in rows] if flat else rows)


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


def paired_detection(
    original: str, latency: str, macs: str, name: str, batches: list[np.ndarray], score: float = 0.25
) -> dict[str, Any]:
    """The ``latency`` and ``macs`` plans of a detector against ``original`` on the same inputs:
    per input prune's detection score (``onnxprune.fidelity_metrics.detection``: the plan's
    detections with score >= ``score`` matched to the original's by IoU, COCO-style credit over
    both sets; 1 where neither detects anything), each plan's mean score and output cosine, and
    how many inputs each plan scores higher on than the other (``higher_latency``,
    ``higher_macs``: the paired sign counts; equal scores count for neither), with the mean
    paired difference (latency minus MACs) and its standard error."""
    from onnxprune.fidelity_metrics.detection import detection_parts

    ref = _outputs(original, name, batches, flat=False)
    result: dict[str, Any] = {"n": len(ref), "metric": "detection", "score_threshold": score}
    values = {}
    for key, path in (("latency", latency), ("macs", macs)):
        out = _outputs(path, name, batches, flat=False)
        values[key] = detection_parts(ref, out, score=score).values
        result[key] = {
            "detection": float(values[key].mean()),
            "cosine": _cosine(out.reshape(len(out), -1), ref.reshape(len(ref), -1)),
        }
    diff = values["latency"] - values["macs"]
    result["higher_latency"] = int((diff > 1e-9).sum())
    result["higher_macs"] = int((diff < -1e-9).sum())
    result["mean_difference"] = float(diff.mean())
    result["difference_se"] = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    result["reference_detections"] = int(sum(int((r[:, 4] >= score).sum()) for r in ref))
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


def cached_make(folder: Path, make: Callable[[str, int, int], dict] | None = None) -> Callable[[str, int, int], dict]:
    """``make`` (default: corpus_inputs.feeds) whose inputs are kept in ``folder``, one .npz per
    model file name, count and seed (float32): made once, read back after."""
    folder = Path(folder)

    def cached(base: str, count: int, seed: int) -> dict:
        path = folder / f"{base}.{count}.{seed}.npz"
        if not path.exists():
            made = {k: np.asarray(v, np.float32) for k, v in (make or _feeds())(base, count, seed).items()}
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
            try:
                np.savez(tmp, **made)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    return cached


def _feeds() -> Callable[[str, int, int], dict]:
    from corpus_inputs import feeds

    return feeds


def _seeds(n: int) -> range:
    """The corpus_inputs seeds of ``n`` held-out inputs: whole seeds of ``BATCH`` from ``SEEDS_FROM``."""
    return range(SEEDS_FROM, SEEDS_FROM + max(-(-n // BATCH), 1))


def heldout_row(row: dict, spec: dict, n: int, make: Callable[[str, int, int], dict] | None = None) -> dict[str, Any]:
    """``paired_top1`` of a benchmark row's latency plan and its (final) matched MACs plan on
    ``n`` inputs (rounded up to whole seeds of ``BATCH``), made by ``make(model file name,
    count, seed)`` (default: corpus_inputs.feeds), seeds from ``SEEDS_FROM``; a detector's
    (``heldout_metric`` "detection" in its spec) ``paired_detection``."""
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
    seeds = _seeds(n)
    base = os.path.basename(spec["path"])
    batches = [np.asarray(make(base, BATCH, s)[spec["input"]], np.float32) for s in seeds]
    paired = paired_detection if spec.get("heldout_metric") == "detection" else paired_top1
    result = paired(spec["path"], row["latency_plan"]["file"], row["macs_plan"]["file"], spec["input"], batches)
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
    n: int | None = None,
) -> None:
    """bench_latency's ``heldout`` phase: ``heldout_row`` of each named row whose spec asks for
    it (``heldout``: how many inputs, or ``n`` when given; ``make`` as there), saved to the rows'
    ``state`` file after each."""
    for name in names:
        spec = model_spec(name)
        if name in rows and spec.get("heldout"):
            print(f"[heldout] {name}", flush=True)
            rows[name]["heldout"] = heldout_row(rows[name], spec, n or spec["heldout"], make)
            save_rows(state, rows)


def heldout_inputs_phase(
    names: list[str], model_spec: Callable[[str], dict], make: Callable[[str, int, int], dict], n: int | None = None
) -> list[str]:
    """bench_latency's ``heldout-inputs`` phase: the held-out inputs the ``heldout`` phase would
    use for the named rows (corpus models only: the trained zoo's glyph images are quick), made
    by ``make`` (a ``cached_make``: made now, kept for later); the model file names done."""
    done: list[str] = []
    for name in names:
        spec = model_spec(name)
        base = os.path.basename(spec["path"])
        if spec.get("heldout") and spec.get("kind") != "trained" and base not in done:
            for seed in _seeds(n or spec["heldout"]):
                make(base, BATCH, seed)
            done.append(base)
    return done
