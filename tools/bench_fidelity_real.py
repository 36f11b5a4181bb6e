#!/usr/bin/env python3
"""Fidelity-guided pruning on real trained models (issue 12 benchmark): the corpus models
(../shared/corpus/CORPUS.md) fed realistic inputs made without downloads (tools/corpus_inputs.py),
32 calibration and 32 held-out inputs per model (different seeds).

For every model and row (a row is a name and the ``prune`` options it adds; ROWS in
tools/fidelity_real_rows.py):
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
        [--rows NAME,...] [--force] [--timeout 600] [--jobs 1] [--markdown-only] [--deadline HH:MM]
    PYTHONPATH=$PWD python tools/bench_fidelity_real.py --merge-from OTHER.json [--merge-from ...]

``--deadline HH:MM[:SS]`` (UTC, today) starts no ``--min-fidelity`` run that its timeout could
carry past that time (a quiet window's end): it is recorded as not run, saying so.

``--merge-from`` takes the (model, row) cells and digits lines of another run's JSON (e.g. a
snapshot's ``benchmarks/fidelity_real.json``) where they are newer than this file's: measured
on a later package commit (git ancestry), or on the same or an unrelated commit at a later
time. Each merged row keeps its own commit and date (and says which file it came from); the
.md is rewritten.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from corpus_inputs import MODELS, feeds, samples  # noqa: E402
from fidelity_real_results import (  # noqa: E402
    OUT,
    load_results,
    merge_results,
    now,
    package_commit,
    update_results,
)
from fidelity_real_rows import (  # noqa: E402
    DIGITS,
    DIGITS_ROWS,
    LEFT_OUT,
    N_CAL,
    N_HELD,
    ORDER,
    ROWS,
    SEED_CAL,
    SEED_HELD,
    SHAPES,
    TARGETS,
    UNIFORM_RATIOS,
    Row,
)


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


def _deadline(text: str) -> float:
    """HH:MM[:SS] UTC today, as epoch seconds."""
    parts = [int(p) for p in text.split(":")]
    h, m, sec = (parts + [0])[:3]
    day = time.time() // 86400 * 86400
    return day + h * 3600 + m * 60 + sec


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
            alone = {**{k: r[k] for k in keys if k in r}, "commit": commit, "date": now()}

            def put(results: dict, alone: dict = alone, row: Row = row) -> None:
                cell = results["models"].get(name, {}).get("rows", {}).get(row.name, {}).get("targets", {})
                if str(target) in cell:
                    cell[str(target)]["alone"] = alone
                else:
                    print(f"{name}: {row.name} @ {target}: no recorded cell to add the run alone to", flush=True)

            update_results(put)


def run_model(
    name: str,
    corpus: str,
    rows: list[Row],
    timeout: float,
    commit: str,
    keep_going: bool = False,
    deadline: float | None = None,
) -> None:
    """The worker: every asked row of one model, in this process. After a run times out, the
    model's remaining ``--min-fidelity`` runs are recorded as not run (a time budget: the rows
    after add recovery on top), except the 0.99 run of the row whose 0.95 run timed out (its
    sensitivity is a subset of the 0.95 run's), unless ``keep_going``. A run that could last
    past ``deadline`` (epoch seconds: its timeout from now) is not started (recorded so)."""
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
                    if deadline is not None and time.time() + timeout > deadline:
                        why = f"not run: its {timeout:g} s could pass the deadline {time.strftime('%H:%M:%S', time.gmtime(deadline))} UTC"
                        cells[str(target)] = {"exit": "not run", "error": why, "seconds": 0.0}
                        print(f"  @ {target}: {why}", flush=True)
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
            cell.update(commit=commit, options=row.options, seconds=round(time.perf_counter() - t0, 1), date=now())

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
            "date": now(),
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
        "--deadline",
        metavar="HH:MM[:SS]",
        help="UTC, today: start no --min-fidelity run whose timeout could carry it past this time (recorded as not run)",
    )
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
    deadline = _deadline(args.deadline) if args.deadline else None
    if args.worker:
        return run_model(args.worker, args.corpus, rows, args.timeout, commit, args.keep_going, deadline)
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
            cmd += ["--deadline", args.deadline] if args.deadline else []
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
