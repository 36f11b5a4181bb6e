#!/usr/bin/env python3
"""Fidelity-guided pruning on real trained models (issue 12 benchmark): the corpus models
(../shared/corpus/CORPUS.md) fed realistic inputs made without downloads (tools/corpus_inputs.py),
32 calibration and 32 held-out inputs per model (different seeds).

For every model and row (a row is a name and the ``prune`` options it adds; ROWS below):
``uniform`` rows scan ``ratio`` and keep the largest ratio whose *held-out* fidelity meets
each target (an oracle choice, the best a uniform ratio can do); ``target`` rows run once per
target with ``min_fidelity=TARGET``. Each run is ``onnxprune.prune`` (what the CLI's ``prune``
calls) in one worker process per model, so the model's inputs, the original's outputs and a
row's sensitivity trials are made once for all its cells (tools/fidelity_real_cells.py); a run
is stopped after 10 minutes. The pruned model is judged by ``onnxprune.fidelity``'s code on
the held-out and the calibration inputs, with the package's per-output metrics. The digits
CNN's ``--validate`` example (README) is the last line of the table (``--only digits``).

Results go to ``benchmarks/fidelity_real.json`` after every cell (a row already measured on
the same package commit is kept unless ``--force``), and ``benchmarks/fidelity_real.md`` is
written from it (tools/fidelity_real_report.py).

    . /work/venv/bin/activate
    PYTHONPATH=$PWD python tools/bench_fidelity_real.py [--corpus /work/corpus] [--only SUBSTR]...
        [--rows NAME,...] [--force] [--timeout 600] [--jobs 1] [--markdown-only]
    PYTHONPATH=$PWD python tools/bench_fidelity_real.py --merge-from OTHER.json [--merge-from ...]

``--merge-from`` takes the (model, row) cells and digits lines of another run's JSON (e.g. a
snapshot's ``benchmarks/fidelity_real.json``) where they are newer than this file's: measured
on a later package commit (git ancestry), or on the same or an unrelated commit at a later
time. Each merged row keeps its own commit and date (and says which file it came from); the
.md is rewritten.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from corpus_inputs import MODELS, feeds, samples  # noqa: E402

OUT = ROOT / "benchmarks" / "fidelity_real"
TARGETS = (0.99, 0.95)
N_CAL, N_HELD, SEED_CAL, SEED_HELD = 32, 32, 1, 2
UNIFORM_RATIOS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
DIGITS = "digits_cnn.onnx"


@dataclass(frozen=True)
class Row:
    """One line of the table: ``prune`` options (a "{target}" value is replaced by the target)."""

    name: str
    kind: str  # "uniform": scan the ratio; "target": one run per fidelity target
    options: dict[str, Any] = field(default_factory=dict)


ROWS = (
    Row("uniform L2", "uniform", {"criterion": "l2"}),
    Row("allocated L2", "target", {"criterion": "l2", "min_fidelity": "{target}"}),
    Row("allocated + reconstruct", "target", {"criterion": "l2", "min_fidelity": "{target}", "reconstruct": True}),
    Row(
        "allocated + reconstruct + recalibrate",
        "target",
        {"criterion": "l2", "min_fidelity": "{target}", "reconstruct": True, "recalibrate": True},
    ),
    # Data-based criteria (session 5): the error a channel leaves replaced by its calibration
    # mean (what the default compensation does), and the ThiNet selection with the refit it assumes.
    Row("allocated contribution", "target", {"criterion": "contribution", "min_fidelity": "{target}"}),
    Row(
        "allocated reconstruction + reconstruct",
        "target",
        {"criterion": "reconstruction", "min_fidelity": "{target}", "reconstruct": True},
    ),
    # Session 8: the statistics re-calibration on top of the ThiNet selection and its refit.
    Row(
        "allocated reconstruction + reconstruct + recalibrate",
        "target",
        {"criterion": "reconstruction", "min_fidelity": "{target}", "reconstruct": True, "recalibrate": True},
    ),
    # Session 9: the same search, keeping only plans whose batch of 32 other inputs (the benchmark's
    # held-out batch, as a user validating on 32 images would give it) reads >= the target in 95%
    # of batches, the agreement at its bound (--fidelity-batch 32).
    Row(
        "allocated reconstruction + reconstruct + fidelity-batch 32",
        "target",
        {"criterion": "reconstruction", "min_fidelity": "{target}", "reconstruct": True, "fidelity_batch": 32},
    ),
    # Session 10: the refit sequential (--reconstruct-from pruned): each reader fitted on the pruned
    # model's activations, the readers before it refitted first, in the search's trials and the result.
    Row(
        "allocated reconstruction + reconstruct sequential",
        "target",
        {"criterion": "reconstruction", "min_fidelity": "{target}", "reconstruct": True, "reconstruct_from": "pruned"},
    ),
    Row(
        "allocated reconstruction + reconstruct sequential + recalibrate",
        "target",
        {
            "criterion": "reconstruction",
            "min_fidelity": "{target}",
            "reconstruct": True,
            "reconstruct_from": "pruned",
            "recalibrate": True,
        },
    ),
)
# The README's --validate example on the digits CNN (issue 12: at least 46% MACs cut at --max-drop 0.5%).
DIGITS_ROWS = {
    "validate, max-drop 0.5%": {"validate": "fixtures/digits_accuracy.py:accuracy", "max_drop": "0.5%"},
    # the criterion the default replaced (without recovery, contribution since fdf4e16)
    "validate, max-drop 0.5%, l2": {
        "validate": "fixtures/digits_accuracy.py:accuracy",
        "max_drop": "0.5%",
        "criterion": "l2",
    },
    "validate, max-drop 0.5% + reconstruct": {
        "validate": "fixtures/digits_accuracy.py:accuracy",
        "max_drop": "0.5%",
        "reconstruct": True,
    },
    "validate, max-drop 0.5%, contribution": {
        "validate": "fixtures/digits_accuracy.py:accuracy",
        "max_drop": "0.5%",
        "criterion": "contribution",
    },
    "validate, max-drop 0.5% + reconstruct, reconstruction": {
        "validate": "fixtures/digits_accuracy.py:accuracy",
        "max_drop": "0.5%",
        "reconstruct": True,
        "criterion": "reconstruction",
    },
}

# Models left out, and why (the rest of MODELS is benchmarked).
LEFT_OUT = {
    "dbnet_table_edge_paddle_convinteger.onnx": "ConvInteger (dynamic int8) layers: 3.6 s per run on 2 cores, "
    "a --min-fidelity search cannot finish in 10 minutes",
    "silero_vad_op18_torchdynamo_if.onnx": "all its convs are inside an If branch, which onnxprune does not prune; "
    "its output is a probability fed back through a recurrent state",
    "opennsfw_resnet50_tf2onnx_nhwc.onnx": "every input we can make without downloads (photos) is safe with p = 1.0, "
    "so top-1 agreement holds even at uniform ratio 0.5 (72% MACs cut, held-out 1.000, measured on ba2fd0c): "
    "it would only inflate the median; a --min-fidelity run takes 210 s",
}
# Cheapest first, so a partial run covers most models.
ORDER = [
    "crnn_captcha_torch.onnx",
    "ppocrv6_rec_tiny_paddle_int8w.onnx",
    "oww_speech_embedding_tf2onnx_nhwc.onnx",
    "vcb_captcha_cnn_tf2onnx_nhwc.onnx",
    "pplcnet_table_orient_cls_paddle.onnx",
    "basic_pitch_nmp_tf2onnx.onnx",
    "resnet18_malimg_torchdynamo_extdata.onnx",
    "ppocrv6_det_tiny_paddle.onnx",
    "yolo26n_isbn_det_torch.onnx",
    "picodet_layout_cdla_paddle.onnx",
    "opennsfw_resnet50_tf2onnx_nhwc.onnx",
]
# Static shapes for dynamic spatial dims (CORPUS.md's suggested shape, the size the inputs are made at).
SHAPES = {
    "yolo26n_isbn_det_torch.onnx": {"images": (1, 3, 640, 640)},
    "ppocrv6_det_tiny_paddle.onnx": {"x": (1, 3, 640, 640)},
    "ppocrv6_rec_tiny_paddle_int8w.onnx": {"x": (1, 3, 48, 320)},
}


def package_commit() -> str:
    """The last commit that changed the package (the harness and the inputs may change apart)."""
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%h", "--", "onnxprune"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def update_results(fn: Callable[[dict], None]) -> None:
    """Read-modify-write of the JSON under a lock (workers of ``--jobs 2`` write in turn)."""
    path = OUT.with_suffix(".json")
    with open(Path(tempfile.gettempdir()) / f"fidelity_real.{abs(hash(str(path)))}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = load_results()
        fn(results)
        path.write_text(json.dumps(results, indent=1))


def load_results() -> dict[str, Any]:
    path = OUT.with_suffix(".json")
    return json.loads(path.read_text()) if path.exists() else {"models": {}}


def _is_ancestor(a: str, b: str) -> bool:
    """Commit ``a`` is an ancestor of ``b`` in this repository (False when unknown)."""
    try:
        return (
            subprocess.run(
                ["git", "-C", str(ROOT), "merge-base", "--is-ancestor", a, b], capture_output=True, check=False
            ).returncode
            == 0
        )
    except OSError:
        return False


def newer(theirs: dict, ours: dict | None) -> bool:
    """``theirs`` (a row or digits cell) supersedes ``ours``: a later package commit, else
    (the same commit, or commits neither of which contains the other) a later date."""
    if ours is None:
        return True
    a, b = str(ours.get("commit") or ""), str(theirs.get("commit") or "")
    if a and b and a != b:
        if _is_ancestor(a, b):
            return True
        if _is_ancestor(b, a):
            return False
    return str(theirs.get("date") or "") > str(ours.get("date") or "")


def _more_alone(row: dict, mine: dict | None) -> bool:
    """The same run as ``mine`` (commit and date) with more of its runs repeated alone (``--alone``)."""

    def alone(r: dict) -> int:
        return sum(1 for c in (r.get("targets") or {}).values() if "alone" in c)

    same = mine is not None and (row.get("commit"), row.get("date")) == (mine.get("commit"), mine.get("date"))
    return same and alone(row) > alone(mine)  # type: ignore[arg-type]


def merge_results(results: dict, other: dict, source: str) -> list[str]:
    """Copy into ``results`` every (model, row) cell and digits line of ``other`` that is
    newer (see ``newer``); returns what was taken, one line each."""
    taken = []
    for model, entry in other.get("models", {}).items():
        mine = results["models"].setdefault(model, {"rows": {}})
        if entry.get("inputs") and not mine.get("inputs"):
            mine["inputs"] = entry["inputs"]
        for name, row in entry.get("rows", {}).items():
            if row.get("commit") and (newer(row, mine["rows"].get(name)) or _more_alone(row, mine["rows"].get(name))):
                mine["rows"][name] = {**row, "merged_from": row.get("merged_from", source)}
                taken.append(f"{model} / {name}: `{row.get('commit')}` {row.get('date', '')}")
    for name, cell in (other.get("digits") or {}).items():
        if cell.get("commit") and newer(cell, results.setdefault("digits", {}).get(name)):
            results["digits"][name] = {**cell, "merged_from": cell.get("merged_from", source)}
            taken.append(f"digits / {name}: `{cell.get('commit')}` {cell.get('date', '')}")
    return taken


def _short(r: dict) -> str:
    if r.get("exit") != 0:
        return f"FAILED ({r.get('error')}) {r.get('seconds')} s"
    shared = (
        f" (sensitivity shared; alone ~{r['standalone_estimate_seconds']} s)"
        if "standalone_estimate_seconds" in r
        else ""
    )
    held = f"held-out {r['heldout']:.4f}, calibration {r['calibration']:.4f}" if "heldout" in r else ""
    return f"MACs -{(r.get('macs_cut') or 0) * 100:.1f}%, {held}, {r['seconds']} s{shared} (+{r.get('judge_seconds')} s judging)"


def _targets_order(row: Row) -> list[float]:
    """Lowest target first: its sensitivity runs the most trials, a higher floor re-derives."""
    return sorted(TARGETS)


def _model_files(tmp: Path, name: str, model: Path) -> dict[str, Any]:
    """A model's calibration and verification files, input shapes and judge (held-out and
    calibration inputs with the original's outputs)."""
    from fidelity_real_cells import Judge

    files: dict[str, Any] = {"cal": tmp / "cal.npz", "verify": tmp / "verify.npz", "shapes": SHAPES.get(name, {})}
    np.savez(files["cal"], **feeds(name, N_CAL, SEED_CAL))
    np.savez(files["verify"], **feeds(name, 2, SEED_CAL))  # the first 2 calibration samples
    t0 = time.perf_counter()
    files["judge"] = Judge(
        model, {"heldout": samples(name, N_HELD, SEED_HELD), "calibration": samples(name, N_CAL, SEED_CAL)}
    )
    print(f"{name}: inputs and the original's outputs {time.perf_counter() - t0:.1f} s", flush=True)
    return files


def run_alone(name: str, corpus: str, rows: list[Row], timeout: float, commit: str, target: float) -> None:
    """The worker of ``--alone``: each asked ``--min-fidelity`` row's run at ``target`` on its
    own (its own sensitivity, nothing shared); its time, CPU time, load and plan's MACs and
    held-out fidelity go into the recorded cell's ``alone`` (the cell's figures stay)."""
    from fidelity_real_cells import prune_cell

    model = Path(corpus) / name
    with tempfile.TemporaryDirectory() as tmpdir:
        files = _model_files(Path(tmpdir), name, model)
        for row in rows:
            if row.kind != "target":
                continue
            opts = {k: (target if v == "{target}" else v) for k, v in row.options.items()}
            r = prune_cell(model, opts, files, None, None, timeout)
            print(f"{name}: {row.name} @ {target} alone: {_short(r)}", flush=True)
            keys = ("exit", "error", "seconds", "cpu_seconds", "load_before", "load_after", "macs_cut", "heldout")
            alone = {**{k: r[k] for k in keys if k in r}, "commit": commit, "date": _now()}

            def put(results: dict, alone: dict = alone, row: Row = row) -> None:
                cell = results["models"].get(name, {}).get("rows", {}).get(row.name, {}).get("targets", {})
                if str(target) in cell:
                    cell[str(target)]["alone"] = alone
                else:
                    print(f"{name}: {row.name} @ {target}: no recorded cell to add the run alone to", flush=True)

            update_results(put)


def run_model(name: str, corpus: str, rows: list[Row], timeout: float, commit: str, keep_going: bool = False) -> None:
    """The worker: every asked row of one model, in this process. After a run times out, the
    model's remaining ``--min-fidelity`` runs are recorded as not run (a time budget: the rows
    after add recovery on top), except the 0.99 run of the row whose 0.95 run timed out (its
    sensitivity is a subset of the 0.95 run's), unless ``keep_going``."""
    from fidelity_real_cells import SharedSensitivity, prune_cell

    model = Path(corpus) / name
    with tempfile.TemporaryDirectory() as tmpdir, SharedSensitivity() as shared:
        files = _model_files(Path(tmpdir), name, model)
        stopped = ""  # why the remaining runs are not started
        for row in rows:
            print(f"{name}: {row.name}", flush=True)
            t0 = time.perf_counter()
            if row.kind == "uniform":
                scan = []
                for ratio in UNIFORM_RATIOS:
                    r = prune_cell(model, {**row.options, "ratio": ratio}, files, None, None, timeout)
                    r["ratio"] = ratio
                    scan.append(r)
                    print(f"  ratio {ratio}: {_short(r)}", flush=True)
                    if r["exit"] != 0 or r["heldout"] < min(TARGETS):
                        break
                cells = {}
                for target in TARGETS:
                    ok = [s for s in scan if s["exit"] == 0 and s["heldout"] >= target]
                    cells[str(target)] = dict(ok[-1]) if ok else {"none": True, "macs_cut": 0.0, "first": scan[0]}
                cell: dict[str, Any] = {"scan": scan, "targets": cells}
            else:
                cells, pending_stop = {}, ""
                for target in _targets_order(row):
                    if stopped:  # see the docstring
                        cells[str(target)] = {"exit": "not run", "error": f"not run: {stopped}", "seconds": 0.0}
                        continue
                    opts = {k: (target if v == "{target}" else v) for k, v in row.options.items()}
                    cells[str(target)] = r = prune_cell(model, opts, files, shared, (name, row.name), timeout)
                    print(f"  @ {target}: {_short(r)}", flush=True)
                    if r["exit"] is None and not keep_going:
                        stopped = f"{row.name} @ {target} timed out at {timeout:g} s"
                        if target < max(TARGETS):  # the 0.99 run's search is a subset: still tried
                            pending_stop, stopped = stopped, ""
                if pending_stop:
                    stopped = stopped or pending_stop
                cell = {"targets": {str(t): cells[str(t)] for t in TARGETS}}
            cell.update(commit=commit, options=row.options, seconds=round(time.perf_counter() - t0, 1), date=_now())

            def put(results: dict, cell: dict = cell, row: Row = row) -> None:
                entry = results["models"].setdefault(name, {"rows": {}})
                entry["inputs"] = MODELS[name].what
                entry["rows"][row.name] = cell

            update_results(put)


def run_digits(timeout: float, commit: str) -> None:
    """The README's --validate example, through the API: MACs cut, accuracy, calls."""
    from fidelity_real_cells import time_limit

    import onnxprune

    for name, options in DIGITS_ROWS.items():
        t0 = time.perf_counter()
        with time_limit(timeout):
            r = onnxprune.prune(
                str(ROOT / "fixtures" / DIGITS),
                calibration=str(ROOT / "fixtures" / "digits_calibration.npz"),
                **{**options, "validate": str(ROOT / options["validate"])},
            )
        v, rep = r.report.validation, r.report
        cell = {
            "macs_cut": 1 - rep.macs_after / rep.macs_before,
            "baseline": v.baseline,
            "final": v.final,
            "threshold": v.threshold,
            "calls": v.calls,
            "criterion": rep.criterion,
            "criterion_default": rep.criterion_reason.startswith("default"),
            "seconds": round(time.perf_counter() - t0, 1),
            "commit": commit,
            "options": options,
            "date": _now(),
        }
        print(f"{DIGITS}: {name}: {cell}", flush=True)

        def put(results: dict, cell: dict = cell, name: str = name) -> None:
            results.setdefault("digits", {})[name] = cell

        update_results(put)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="/work/corpus")
    ap.add_argument("--only", action="append", default=[], help="model file name substring (repeatable)")
    ap.add_argument("--rows", help="comma-separated row names (default: all)")
    ap.add_argument("--force", action="store_true", help="re-run rows already measured on this package commit")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per prune run (default 600)")
    ap.add_argument("--jobs", type=int, default=1, choices=(1, 2), help="models in parallel (default 1)")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the .json")
    ap.add_argument("--keep-going", action="store_true", help="run a model's costlier runs after one timed out")
    ap.add_argument(
        "--merge-from",
        action="append",
        default=[],
        metavar="FILE.json",
        help="take the newer (model, row) cells of another run's JSON, then rewrite the .md (runs nothing)",
    )
    ap.add_argument(
        "--alone",
        type=float,
        metavar="TARGET",
        help="repeat the --only models' and --rows rows' run at TARGET on its own (no shared sensitivity) and record its "
        "time in the recorded cell (its time alone measured, not estimated)",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # one model, in this process
    args = ap.parse_args()
    commit = package_commit()
    rows = [r for r in ROWS if args.rows is None or r.name in args.rows.split(",")]
    if args.worker == DIGITS:
        return run_digits(args.timeout, commit)
    if args.worker and args.alone is not None:
        return run_alone(args.worker, args.corpus, rows, args.timeout, commit, args.alone)
    if args.worker:
        return run_model(args.worker, args.corpus, rows, args.timeout, commit, args.keep_going)
    if args.alone is not None:
        for name in MODELS:
            if name in LEFT_OUT or not args.only or not any(o in name for o in args.only):
                continue
            cmd = [sys.executable, __file__, "--worker", name, "--corpus", args.corpus, "--timeout", str(args.timeout)]
            cmd += ["--alone", str(args.alone), "--rows", ",".join(r.name for r in rows)]
            subprocess.run(cmd, check=False)
    for path in args.merge_from:
        other = json.loads(Path(path).read_text())

        def merge(results: dict, other: dict = other, path: str = path) -> None:
            taken = merge_results(results, other, path)
            print(f"{path}: {len(taken)} cell(s) merged" + "".join(f"\n  {t}" for t in taken), flush=True)

        update_results(merge)
    if not args.markdown_only and not args.merge_from and args.alone is None:
        results = load_results()
        todo = []
        names = sorted(MODELS, key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER)) + [DIGITS]
        for name in names:
            if name in LEFT_OUT or (args.only and not any(o in name for o in args.only)):
                continue
            if name == DIGITS:
                if (
                    args.force
                    or any(c.get("commit") != commit for c in results.get("digits", {}).values())
                    or not results.get("digits")
                ):
                    todo.append((name, []))
                continue
            done = results["models"].get(name, {}).get("rows", {})
            need = [r.name for r in rows if args.force or done.get(r.name, {}).get("commit") != commit]
            if need:
                todo.append((name, need))

        def work(item: tuple[str, list[str]]) -> int:
            name, need = item
            cmd = [sys.executable, __file__, "--worker", name, "--corpus", args.corpus, "--timeout", str(args.timeout)]
            cmd += ["--keep-going"] if args.keep_going else []
            return subprocess.run([*cmd, "--rows", ",".join(need)] if need else cmd, check=False).returncode

        with ThreadPoolExecutor(args.jobs) as pool:
            for (name, _), code in zip(todo, pool.map(work, todo)):
                if code:
                    print(f"{name}: worker exit {code}", flush=True)
    from fidelity_real_report import markdown, summary

    results = load_results()
    OUT.with_suffix(".md").write_text(markdown(results))
    print(summary(results))


if __name__ == "__main__":
    main()
