"""One model's cells of the issue-12 benchmark (tools/bench_fidelity_real.py), run in-process
through the API: ``onnxprune.prune(model, config=PruneConfig(...))`` is what the CLI's
``prune`` calls, so a cell is the CLI's run without the interpreter start.

What makes a model's cells cheaper than one CLI process per cell:
- the model's inputs, and the original's outputs on them, are made once (``Judge``);
- a row's sensitivity trials are measured once for all its targets (``SharedSensitivity``):
  the lowest fidelity floor runs first (the most trials); a higher floor re-derives its
  sensitivity from the same trial runner, whose cache answers every trial, so the numbers are
  the ones a fresh run measures (the number of onnxruntime runs it took is recorded: 0).
  Anything unexpected falls back to the package's own function (recorded);
- a cell is stopped after its time limit by SIGALRM (``time_limit``): the package's work
  returns to Python between onnxruntime runs, so it stops within one trial.

The wall time of a cell is the ``prune`` call alone; its CPU time (all threads of the process)
is recorded beside it, as the machine is shared. A cell that reused a sensitivity also
gets ``standalone_estimate_seconds``: its time plus the sensitivity time it did not pay, at the
first run's seconds per trial, for its own number of trials.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CellTimeout", "Judge", "SharedSensitivity", "StageClock", "prune_cell", "time_limit"]


class CellTimeout(BaseException):
    """A cell ran past its time limit (a BaseException: no ``except Exception`` in the package
    swallows it)."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise CellTimeout in this (main) thread after ``seconds``."""

    def fire(signum: int, frame: object) -> None:
        raise CellTimeout(f"time limit {seconds:g} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Judge:
    """``onnxprune.fidelity.fidelity(original, pruned, feeds)`` with the original's outputs run
    once per model: the same code (fidelity_from_outputs on the paired outputs, the output batch
    axes from the original)."""

    def __init__(self, model: Path, splits: dict[str, list[dict]]) -> None:
        import onnx

        from onnxprune import fidelity as fid
        from onnxprune.runtime import session

        proto = onnx.load(str(model), load_external_data=False)
        self.batch_axes = fid.output_batch_axes(proto)
        run = session(str(model), source=model.name)
        self.names = run.output_names
        self.splits = splits
        self.extra = EXTRA.get(model.name)
        self.refs = {k: self._outputs(run, fs) for k, fs in splits.items()}

    def _outputs(self, run: Any, feeds_list: list[dict]) -> list[list[np.ndarray]]:
        per_output: list[list[np.ndarray]] = [[] for _ in self.names]
        for feed in feeds_list:
            for i, a in enumerate(run(feed)):
                per_output[i].append(a)
        return per_output

    def __call__(self, pruned: Any, source: str) -> dict[str, Any]:
        from onnxprune.fidelity import fidelity_from_outputs, run_score
        from onnxprune.runtime import session

        run = session(pruned, source=source, pruned=True)
        out: dict[str, Any] = {}
        for split, fs in self.splits.items():
            gots = self._outputs(run, fs)
            per_output = fidelity_from_outputs(self.names, self.refs[split], gots, batch_axes=self.batch_axes)
            out[split] = run_score(per_output)[0]
            if self.extra is not None:
                what, fn = self.extra
                out.setdefault("extra", {})[split] = {"what": what, **fn(self.refs[split], gots)}
            if split == "heldout":
                out["metrics"] = {
                    o.name: {
                        "metric": o.metric,
                        "value": o.score,
                        "cosine": o.cosine,
                        "reason": getattr(o, "reason", ""),
                    }
                    for o in per_output
                }
        return out


def picodet_head(per_output: list[list[np.ndarray]], size: tuple[int, int] = (800, 608)) -> np.ndarray:
    """PicoDet's 8 raw outputs (per level: class probabilities [1, HW, C], then the box
    distributions [1, HW, 4 x 8]) as one raw head [N, anchors, 4 + C] (cx, cy, w, h and the
    class scores), decoded as its post-processing does (PaddleOCR's picodet_postprocess,
    rapid-layout): anchor centres (col + 0.5, row + 0.5) x stride, each side's distance the
    expectation of a softmax over 8 bins, x stride."""
    levels = len(per_output) // 2
    heads = []
    for level in range(levels):
        scores = np.concatenate(per_output[level], axis=0).astype(np.float64)
        dist = np.concatenate(per_output[levels + level], axis=0).astype(np.float64)
        n, hw, _ = scores.shape
        stride = 8 * 2**level
        w = -(-size[1] // stride)
        rows, cols = np.divmod(np.arange(hw), w)
        cx, cy = (cols + 0.5) * stride, (rows + 0.5) * stride
        logits = dist.reshape(n, hw, 4, -1)
        p = np.exp(logits - logits.max(axis=-1, keepdims=True))
        d = (p / p.sum(axis=-1, keepdims=True)) @ np.arange(logits.shape[-1]) * stride  # l, t, r, b
        box = np.stack(
            [
                cx + (d[..., 2] - d[..., 0]) / 2,
                cy + (d[..., 3] - d[..., 1]) / 2,
                d[..., 0] + d[..., 2],
                d[..., 1] + d[..., 3],
            ],
            axis=-1,
        )
        heads.append(np.concatenate([box, scores], axis=-1))
    return np.concatenate(heads, axis=1)


def picodet_detections(refs: list[list[np.ndarray]], gots: list[list[np.ndarray]]) -> dict[str, Any]:
    """The decoded detections of both models (score >= 0.4, NMS at IoU 0.5: rapid-layout's
    PicoDet defaults) compared by the package's detection metric."""
    from onnxprune.fidelity_metrics.detection import detection

    r = detection(picodet_head(refs), picodet_head(gots), score=0.4, iou=0.5, nms=0.5)
    return {"value": r.value, **{k: v for k, v in r.details.items() if not isinstance(v, str)}}


# Task figures the package has no metric for, computed beside fidelity() (model -> function).
EXTRA = {"picodet_layout_cdla_paddle.onnx": ("decoded detections", picodet_detections)}


class StageClock:
    """The ``progress`` callback of ``prune``: per stage, the time from its first to its last
    report (seconds since the clock started), and the last counts."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.spans: dict[str, list[float]] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter() - self.start
        span = self.spans.setdefault(stage, [now, now, 0, 0])
        span[1:] = [now, done, total]

    def to_dict(self) -> dict[str, Any]:
        return {
            k: {"from": round(a, 1), "to": round(b, 1), "done": d, "total": t} for k, (a, b, d, t) in self.spans.items()
        }


@dataclasses.dataclass
class _Measured:
    floor: float | None
    trials: Any  # stages.SensitivityTrials
    fingerprint: tuple
    seconds: float
    count: int  # trials run


def _fingerprint(analysis: Any) -> tuple:
    """Enough of an analysis to tell another model or options from the same."""
    return (len(analysis.groups), tuple(int(r) for r in np.asarray(analysis.root_of)[:4096]))


class SharedSensitivity:
    """While entered, ``stages.decide.sensitivity_trials`` is wrapped: per ``key`` (a model
    and a row without its target) the first measurement is kept, and a later call whose floor
    is None-for-None or not below the kept one's is re-derived from it (see the module doc).
    ``last`` says what the latest call did."""

    def __init__(self) -> None:
        self.store: dict[Any, _Measured] = {}
        self.key: Any = None
        self.last: dict[str, Any] = {}

    def __enter__(self) -> SharedSensitivity:
        import onnxprune.stages.decide as decide

        self._decide, self._original = decide, decide.sensitivity_trials
        decide.sensitivity_trials = self._wrapped
        return self

    def __exit__(self, *exc: object) -> None:
        self._decide.sensitivity_trials = self._original

    def _wrapped(self, loaded, analysis, scores, stats, feeds, run, *args, floor=None, **kw):  # type: ignore[no-untyped-def]
        kept = self.store.get(self.key)
        if (
            kept is not None
            and not args
            and not kw
            and (kept.floor is None or (floor is not None and floor >= kept.floor))
        ):
            try:
                if kept.fingerprint != _fingerprint(analysis):
                    raise ValueError("the analysis differs from the kept one's")
                return self._rederive(kept, analysis, run, floor)
            except Exception as exc:  # anything unexpected: measure afresh, and say so
                self.last = {"shared": False, "share_failed": f"{type(exc).__name__}: {exc}"[:300]}
        t0 = time.perf_counter()
        trials = self._original(loaded, analysis, scores, stats, feeds, run, *args, floor=floor, **kw)
        seconds = time.perf_counter() - t0
        self.store[self.key] = _Measured(floor, trials, _fingerprint(analysis), seconds, trials.result.trials)
        self.last = {
            "shared": False,
            **self.last,
            "sensitivity_seconds": round(seconds, 1),
            "trials": trials.result.trials,
        }
        return trials

    def _rederive(self, kept: _Measured, analysis: Any, run: Any, floor: float | None) -> Any:
        from onnxprune.sensitivity_analysis import measure_sensitivity

        t = kept.trials
        runner = t.runner
        before = runner.runs
        t0 = time.perf_counter()
        result = measure_sensitivity(
            runner,
            analysis,
            [u.unit for u in t.result.units],
            t.tracker,
            run.config.ratios,
            t.estimates,
            run.config.criterion,
            run.config.fidelity_metrics,
            progress=run.progress_of("sensitivity"),
            floor=floor,
        )
        seconds = time.perf_counter() - t0
        self.last = {
            "shared": True,
            "trials": result.trials,
            "onnxruntime_runs": runner.runs - before,
            "sensitivity_seconds": round(seconds, 1),
            "unpaid_seconds": round(kept.seconds * result.trials / max(kept.count, 1), 1),
        }
        return dataclasses.replace(t, result=result)


def prune_cell(
    model: Path,
    options: Mapping[str, Any],
    files: Mapping[str, Any],
    shared: SharedSensitivity | None,
    key: Any,
    timeout: float,
) -> dict[str, Any]:
    """One ``prune`` run through the API with ``options`` (PruneConfig fields), then the pruned
    model judged on the held-out and calibration inputs."""
    import onnxprune
    from onnxprune.config import PruneConfig

    config = PruneConfig(
        calibration=str(files["cal"]),
        verification_inputs=str(files["verify"]),
        input_shapes=files["shapes"],
        **options,
    )
    if shared is not None:
        shared.key, shared.last = key, {}
    clock = StageClock()
    res: dict[str, Any] = {"options": dict(options), "load_before": round(os.getloadavg()[0], 1)}
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        with time_limit(timeout):
            result = onnxprune.prune(str(model), config=config, progress=clock)
        res["exit"] = 0
    except CellTimeout:
        res.update(exit=None, error=f"timeout after {timeout:g} s")
    except onnxprune.errors.OnnxPruneError as exc:
        res.update(exit=1, error=str(exc)[:400])
    except Exception as exc:  # a crash in the package is a finding: recorded, the next cells still run
        res.update(exit=3, error=f"crash: {type(exc).__name__}: {exc}"[:400])
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["cpu_seconds"] = round(time.process_time() - c0, 1)  # every thread of this process
    res["load_after"] = round(os.getloadavg()[0], 1)
    res["stages"] = clock.to_dict()
    if shared is not None and shared.last:
        res["sensitivity"] = dict(shared.last)
        if shared.last.get("shared"):
            res["standalone_estimate_seconds"] = round(res["seconds"] + shared.last["unpaid_seconds"], 1)
    if res["exit"] != 0:
        return res
    rep = result.report.to_dict()
    mb, ma = rep.get("macs_before"), rep.get("macs_after")
    res["macs_cut"] = (1 - ma / mb) if mb else None
    res["macs_complete"] = rep.get("macs_complete")
    res["report_fidelity"] = rep.get("fidelity_score")
    res["report_evaluation"] = rep.get("evaluation")
    res["channels_removed"] = rep.get("channels_removed")
    res["notes"] = rep.get("notes")
    res["generalisation"] = rep.get("generalisation")  # calibration / estimate / bound the search judged
    if rep.get("sensitivity"):
        res.setdefault("sensitivity", {}).update(
            report_trials=rep["sensitivity"]["trials"], report_seconds=round(rep["sensitivity"]["seconds"], 1)
        )
    t0 = time.perf_counter()
    res.update(files["judge"](result.model, f"{model.name} (pruned)"))
    res["judge_seconds"] = round(time.perf_counter() - t0, 1)
    return res
