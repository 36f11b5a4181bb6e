#!/usr/bin/env python3
"""Fidelity-guided pruning on real trained models (issue 12 benchmark): the corpus models
(../shared/corpus/CORPUS.md) fed realistic inputs made without downloads (tools/corpus_inputs.py),
32 calibration and 32 held-out inputs per model (different seeds).

For every model and row (a row is a name and the ``prune`` options it adds; ROWS below):
``uniform`` rows scan ``--ratio`` and keep the largest ratio whose *held-out* fidelity meets
each target (an oracle choice, the best a uniform ratio can do); ``target`` rows run once per
target with ``--min-fidelity TARGET``. Each run is ``python -m onnxprune prune`` in its own
subprocess with a timeout (10 minutes), one at a time; the pruned model is then judged by
``onnxprune.fidelity.fidelity(original, pruned, held-out feeds)`` (and on the calibration
feeds), with the package's per-output metrics.

Results go to ``benchmarks/fidelity_real.json`` after every run (a cell already there for the
same commit is kept unless ``--force``), and ``benchmarks/fidelity_real.md`` is written from it.

    . /work/venv/bin/activate
    PYTHONPATH=$PWD python tools/bench_fidelity_real.py [--corpus /work/corpus] [--only SUBSTR]...
        [--rows NAME,...] [--force] [--timeout 600] [--markdown-only]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Row:
    """One line of the table: ``prune`` options (``{target}`` is replaced by the target)."""

    name: str
    kind: str  # "uniform": scan --ratio; "target": one run per fidelity target
    args: tuple[str, ...]
    needs: tuple[str, ...] = ()  # CLI options the row needs (skipped, and said so, if prune lacks them)


ROWS = (
    Row("uniform L2", "uniform", ("--criterion", "l2")),
    Row("allocated L2", "target", ("--criterion", "l2", "--min-fidelity", "{target}")),
    Row("allocated + reconstruct", "target", ("--criterion", "l2", "--min-fidelity", "{target}", "--reconstruct")),
    Row(
        "allocated + reconstruct + recalibrate",
        "target",
        ("--criterion", "l2", "--min-fidelity", "{target}", "--reconstruct", "--recalibrate"),
        needs=("--recalibrate",),
    ),
)

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
    "yolo26n_isbn_det_torch.onnx": ("images:1,3,640,640",),
    "ppocrv6_det_tiny_paddle.onnx": ("x:1,3,640,640",),
    "ppocrv6_rec_tiny_paddle_int8w.onnx": ("x:1,3,48,320",),
}


def _commit() -> str:
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


def _prune_options() -> str:
    return subprocess.run(
        [sys.executable, "-m", "onnxprune", "prune", "--help"], capture_output=True, text=True, check=False
    ).stdout


class Judge:
    """``onnxprune.fidelity.fidelity(original, pruned, feeds)`` with the original's outputs run
    once per model: the same code (fidelity_from_outputs on the paired outputs, the output batch
    axes from the original)."""

    def __init__(self, model: Path, splits: dict[str, list[dict]]) -> None:
        import onnx

        from onnxprune import fidelity as fid
        from onnxprune.runtime import session

        self.model = model
        proto = onnx.load(str(model), load_external_data=False)
        self.batch_axes = fid.output_batch_axes(proto) if hasattr(fid, "output_batch_axes") else None
        run = session(str(model), source=model.name)
        self.names = run.output_names
        self.splits = splits
        self.refs = {k: self._outputs(run, fs) for k, fs in splits.items()}

    def _outputs(self, run, feeds_list: list[dict]) -> list[list[np.ndarray]]:
        per_output: list[list[np.ndarray]] = [[] for _ in self.names]
        for feed in feeds_list:
            for i, a in enumerate(run(feed)):
                per_output[i].append(a)
        return per_output

    def __call__(self, pruned: Path) -> dict[str, Any]:
        from onnxprune.fidelity import fidelity_from_outputs, run_score
        from onnxprune.runtime import session

        run = session(str(pruned), source=pruned.name, pruned=True)
        out: dict[str, Any] = {}
        for split, fs in self.splits.items():
            kw = {} if self.batch_axes is None else {"batch_axes": self.batch_axes}
            per_output = fidelity_from_outputs(self.names, self.refs[split], self._outputs(run, fs), **kw)
            out[split] = run_score(per_output)[0]
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


def _run(cmd: list[str], timeout: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"exit": None, "error": f"timeout after {timeout} s", "seconds": round(time.perf_counter() - t0, 1)}
    err = [line for line in p.stderr.splitlines() if line.startswith("onnxprune:") or "Error" in line]
    return {
        "exit": p.returncode,
        "error": (err[-1] if err else (p.stderr.strip().splitlines() or [""])[-1])[:400] if p.returncode else None,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def prune_once(model: Path, args: list[str], files: dict[str, Path], tmp: Path, timeout: int, tag: str) -> dict:
    """One prune run in a subprocess, then the pruned model judged on held-out and calibration feeds."""
    out, report = tmp / f"{tag}.onnx", tmp / f"{tag}.json"
    cmd = [
        sys.executable, "-m", "onnxprune", "prune", str(model), "-o", str(out), "-q",
        "--calibration", str(files["cal"]), "--inputs", str(files["verify"]), "--report", str(report),
        *[a for s in SHAPES.get(model.name, ()) for a in ("--input-shape", s)], *args,
    ]  # fmt: skip
    res = _run(cmd, timeout)
    res["args"] = args
    if res["exit"] != 0:
        return res
    rep = json.loads(report.read_text())
    mb, ma = rep.get("macs_before"), rep.get("macs_after")
    res["macs_cut"] = (1 - ma / mb) if mb else None
    res["macs_complete"] = rep.get("macs_complete")
    res["report_fidelity"] = rep.get("fidelity_score")
    res["report_evaluation"] = rep.get("evaluation")
    res["channels_removed"] = rep.get("channels_removed")
    t0 = time.perf_counter()
    res.update(files["judge"](out))
    res["judge_seconds"] = round(time.perf_counter() - t0, 1)
    for f in (out, report):
        f.unlink(missing_ok=True)
    return res


def bench_row(model: Path, row: Row, files: dict, tmp: Path, timeout: int) -> dict[str, Any]:
    """Per target: the run that meets it (uniform: the largest scanned ratio meeting it held-out)."""
    if row.kind == "uniform":
        scan = []
        for ratio in UNIFORM_RATIOS:
            r = prune_once(model, [*row.args, "--ratio", str(ratio)], files, tmp, timeout, f"u{ratio}")
            r["ratio"] = ratio
            scan.append(r)
            print(f"  {row.name} ratio {ratio}: {_short(r)}", flush=True)
            if r["exit"] != 0 or r["heldout"] < min(TARGETS):
                break
        cells = {}
        for target in TARGETS:
            ok = [s for s in scan if s["exit"] == 0 and s["heldout"] >= target]
            cells[str(target)] = dict(ok[-1]) if ok else {"none": True, "macs_cut": 0.0, "first": scan[0]}
        return {"scan": scan, "targets": cells}
    cells = {}
    for target in TARGETS:
        args = [a.replace("{target}", str(target)) for a in row.args]
        cells[str(target)] = r = prune_once(model, args, files, tmp, timeout, f"t{target}")
        print(f"  {row.name} @ {target}: {_short(r)}", flush=True)
    return {"targets": cells}


def _short(r: dict) -> str:
    if r.get("exit") != 0:
        return f"FAILED ({r.get('error')}) {r.get('seconds')} s"
    return (
        f"MACs -{r['macs_cut'] * 100:.1f}%, held-out {r['heldout']:.4f}, calibration {r['calibration']:.4f}, "
        f"{r['seconds']} s (+{r['judge_seconds']} s judging)"
    )


def model_files(model: Path, tmp: Path) -> dict[str, Any]:
    cal = feeds(model.name, N_CAL, SEED_CAL)
    files = {"cal": tmp / "cal.npz", "verify": tmp / "verify.npz"}
    np.savez(files["cal"], **cal)
    np.savez(files["verify"], **feeds(model.name, 2, SEED_CAL))  # the first 2 calibration samples
    files["judge"] = Judge(
        model, {"heldout": samples(model.name, N_HELD, SEED_HELD), "calibration": samples(model.name, N_CAL, SEED_CAL)}
    )
    return files


def load_results() -> dict[str, Any]:
    path = OUT.with_suffix(".json")
    return json.loads(path.read_text()) if path.exists() else {"models": {}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="/work/corpus")
    ap.add_argument("--only", action="append", default=[], help="model file name substring (repeatable)")
    ap.add_argument("--rows", help="comma-separated row names (default: all)")
    ap.add_argument("--force", action="store_true", help="re-run rows already measured")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per prune run (default 600)")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the .json")
    args = ap.parse_args()
    results = load_results()
    if not args.markdown_only:
        commit = _commit()
        help_text = _prune_options()
        rows = [r for r in ROWS if args.rows is None or r.name in args.rows.split(",")]
        for name in sorted(MODELS, key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER)):
            if name in LEFT_OUT or (args.only and not any(o in name for o in args.only)):
                continue
            model = Path(args.corpus) / name
            entry = results["models"].setdefault(name, {"rows": {}})
            entry["inputs"] = MODELS[name].what
            with tempfile.TemporaryDirectory() as tmpdir:
                tmp = Path(tmpdir)
                files = None
                for row in rows:
                    if row.name in entry["rows"] and not args.force:
                        continue  # measured already (its commit is in the table); --force re-runs
                    missing = [o for o in row.needs if o not in help_text]
                    if missing:
                        entry["rows"][row.name] = {"skipped": f"prune has no {', '.join(missing)} at {commit}"}
                        continue
                    if files is None:
                        files = model_files(model, tmp)
                    print(f"{name}: {row.name}", flush=True)
                    t0 = time.perf_counter()
                    cell = bench_row(model, row, files, tmp, args.timeout)
                    cell.update(
                        commit=commit,
                        row_args=list(row.args),
                        seconds=round(time.perf_counter() - t0, 1),
                        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    )
                    entry["rows"][row.name] = cell
                    OUT.with_suffix(".json").write_text(json.dumps(results, indent=1))
    OUT.with_suffix(".md").write_text(markdown(results))
    print(summary(results))


# -- the table ------------------------------------------------------------------------------


def _cell(row: dict, target: str) -> dict | None:
    return (row.get("targets") or {}).get(target)


def best_cut(entry: dict, target: str, rows: list[str] | None = None) -> tuple[float, str]:
    """The largest MACs cut among the rows whose run holds ``target`` on the held-out inputs."""
    best = (0.0, "none")
    for name, row in entry["rows"].items():
        if rows is not None and name not in rows:
            continue
        # any run of the row that holds the target counts (a plan holding 0.99 holds 0.95)
        for c in [*(row.get("targets") or {}).values(), *row.get("scan", [])]:
            if c.get("exit") == 0 and c.get("heldout", 0) >= float(target) and (c.get("macs_cut") or 0) > best[0]:
                best = (c["macs_cut"], name)
    return best


def summary(results: dict) -> str:
    lines = []
    for target in (str(t) for t in TARGETS):
        cuts = {m: best_cut(e, target)[0] for m, e in results["models"].items()}
        if cuts:
            lines.append(
                f"held-out >= {target}: median best MACs cut {statistics.median(cuts.values()) * 100:.1f}% over "
                f"{len(cuts)} models; " + ", ".join(f"{m.split('_')[0]} {c * 100:.1f}%" for m, c in cuts.items())
            )
    return "\n".join(lines)


def _fmt_cell(c: dict | None, target: str) -> str:
    if c is None:
        return "—"
    if c.get("none"):
        first = c.get("first") or {}
        why = f"ratio {first.get('ratio')}: {first.get('heldout', 0):.3f}" if first.get("exit") == 0 else "failed"
        return f"0 (none holds; {why})"
    if c.get("exit") is None:
        return f"**timeout** ({c.get('seconds')} s)"
    if c.get("exit") != 0:
        return f"**exit {c['exit']}**: {str(c.get('error'))[:80]}"
    miss = "" if c["heldout"] >= float(target) else " ✗"
    ratio = f" (r={c['ratio']})" if "ratio" in c else ""
    return (
        f"{c['macs_cut'] * 100:.1f}%{ratio} · {c['heldout']:.3f}{miss} / {c['calibration']:.3f} · {c['seconds']:.0f} s"
    )


def markdown(results: dict) -> str:
    models = results["models"]
    commits = sorted({r.get("commit") for e in models.values() for r in e["rows"].values() if r.get("commit")})
    row_names = [r.name for r in ROWS] + sorted(
        {n for e in models.values() for n in e["rows"]} - {r.name for r in ROWS}
    )
    lines = [
        "# Fidelity-guided pruning on real trained models (corpus)",
        "",
        f"Made by `tools/bench_fidelity_real.py` on commit(s) {', '.join(f'`{c}`' for c in commits)}; "
        "a 2-core machine shared with other jobs (times are wall-clock and noisy). "
        f"Inputs made without downloads by `tools/corpus_inputs.py`: {N_CAL} calibration inputs (seed {SEED_CAL}) "
        f"and {N_HELD} different held-out inputs (seed {SEED_HELD}) per model, each preprocessed as CORPUS.md says.",
        "",
        "Each cell: **MACs cut** (uniform: the ratio) · **held-out fidelity** / calibration fidelity · wall time of "
        "the `prune` run (search, surgery, verification on 2 inputs). Fidelity = "
        "`onnxprune.fidelity.fidelity(original, pruned, feeds)`: the worst output's score under its metric. "
        "Uniform = the largest `--ratio` (of "
        + ", ".join(map(str, UNIFORM_RATIOS))
        + ") whose held-out fidelity meets the target (chosen on the held-out set: the best a uniform ratio can do); "
        "the other rows run `--min-fidelity TARGET` (plans chosen on the calibration inputs only). "
        "✗ = misses the target on the held-out inputs. Each run is limited to 10 minutes.",
    ]
    for target in (str(t) for t in TARGETS):
        lines += [
            "",
            f"## Held-out fidelity ≥ {target}",
            "",
            "| model | " + " | ".join(row_names) + " | best cut held |",
            "|---|" + "---|" * len(row_names) + "---:|",
        ]
        for m, e in models.items():
            cells = []
            for n in row_names:
                row = e["rows"].get(n)
                if row is None:
                    cells.append("—")
                elif "skipped" in row:
                    cells.append(f"skipped: {row['skipped']}")
                else:
                    cells.append(_fmt_cell(_cell(row, target), target))
            cut, by = best_cut(e, target)
            lines.append(f"| `{m.removesuffix('.onnx')}` | " + " | ".join(cells) + f" | {cut * 100:.1f}% ({by}) |")
        cuts = [best_cut(e, target)[0] for e in models.values()]
        if cuts:
            per_row = []
            for n in row_names:
                rc = [best_cut(e, target, [n])[0] for e in models.values() if "targets" in e["rows"].get(n, {})]
                if rc:
                    per_row.append(f"{n} {statistics.median(rc) * 100:.1f}% ({len(rc)} models)")
            lines += [
                "",
                f"Median MACs cut at held-out ≥ {target} over {len(cuts)} models: best row "
                f"**{statistics.median(cuts) * 100:.1f}%**; per row: " + ", ".join(per_row) + ".",
            ]
    lines += ["", "## Metrics used (held-out, per output)", ""]
    for m, e in models.items():
        metrics = set()
        for row in e["rows"].values():
            for c in (row.get("targets") or {}).values():
                for out, v in (c.get("metrics") or {}).items():
                    metrics.add(f"{out}: {v['metric']}")
        lines.append(f"- `{m}`: " + ("; ".join(sorted(metrics)) or "—") + f". Inputs: {e.get('inputs', '')}.")
    lines += ["", "## Runs: package commit and wall time per row", ""]
    for m, e in models.items():
        runs = [
            f"{n} `{r.get('commit')}` {r.get('seconds', 0):.0f} s" if "skipped" not in r else f"{n}: {r['skipped']}"
            for n, r in e["rows"].items()
        ]
        lines.append(f"- `{m}`: " + "; ".join(runs) + ".")
    lines += ["", "## Left out", ""] + [f"- `{m}`: {why}." for m, why in LEFT_OUT.items()]
    notes = results.get("notes")
    if notes:
        lines += ["", "## Notes", "", notes]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
