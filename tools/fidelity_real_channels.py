#!/usr/bin/env python3
"""Which channels of the corpus models can go at (near) zero fidelity cost? (issue 12)

For every benchmarked model (tools/bench_fidelity_real.py's ORDER) on its 32 calibration
inputs (seed 1), every removable channel group (unpinned) is put in the first category it meets:

- ``dead``: zero (post-ReLU) on >= 99.9% of the positions of every sink it is read at (APoZ);
- ``constant``: its standard deviation at every sink is below 1% of the sink tensor's RMS
  (replaced by its calibration mean: compensation);
- ``linear``: the readers can refit it from the kept channels by least squares with a
  relative output error below 1e-3 (the ``reconstruction`` criterion's cumulative score,
  greedy per layer);

and the MACs removing each category (cumulatively, after the plan's constraints) would save.
Then the masked model without them (calibration means as fill, as compensation does; no refit)
is judged on the 32 held-out inputs (seed 2) with the package's fidelity.

    PYTHONPATH=$PWD python tools/fidelity_real_channels.py [--only SUBSTR]... [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from corpus_inputs import samples  # noqa: E402
from fidelity_real_rows import N_CAL, N_HELD, ORDER, SEED_CAL, SEED_HELD, SHAPES  # noqa: E402

DEAD, CONST, LINEAR = 0.999, 0.01, 1e-3


def sink_moments(proto, analysis, feeds):
    """Per sink tensor: per channel mean, std, zero fraction; and the tensor's RMS."""
    import onnx

    from onnxprune.runtime import session

    axes = {s.tensor: s.axis for s in analysis.sinks}
    names = sorted(axes)
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names if n not in have])
    run = session(m, source="probe", what="sinks as outputs", optimize=True)
    acc: dict[str, list] = {}
    for feed in feeds:
        for n, v in zip(names, run.run(feed, names)):
            v = np.moveaxis(np.asarray(v, dtype=np.float64), axes[n], 0).reshape(np.shape(v)[axes[n]], -1)
            a = acc.setdefault(n, [0.0, 0.0, 0.0, 0])
            a[0] = a[0] + v.sum(1)
            a[1] = a[1] + np.square(v).sum(1)
            a[2] = a[2] + (v == 0).sum(1)
            a[3] += v.shape[1]
    out = {}
    for n, (s, s2, z, c) in acc.items():
        mean = s / c
        var = np.maximum(s2 / c - mean**2, 0.0)
        out[n] = (mean, np.sqrt(var), z / c, float(np.sqrt(np.mean(s2 / c))))
    return out


def measure(name: str, corpus: str) -> dict:
    import onnx

    from onnxprune.analysis import analyze
    from onnxprune.budget import MacsTracker
    from onnxprune.criteria.reconstruction_error import reconstruction_scores
    from onnxprune.planning import enforce_constraints
    from onnxprune.rules import default_registry
    from onnxprune.stages.decide import known_macs
    from onnxprune.trial_runner import TrialRunner

    t0 = time.perf_counter()
    path = Path(corpus) / name
    proto = onnx.load(str(path))
    registry = default_registry()
    analysis = analyze(proto, input_shapes=SHAPES.get(name, {}), registry=registry, source=name)
    cal = samples(name, N_CAL, SEED_CAL)
    held = samples(name, N_HELD, SEED_HELD)
    mom = sink_moments(proto, analysis, cal)
    dead: dict[int, bool] = {}
    const: dict[int, bool] = {}
    for sink in analysis.sinks:
        _mean, std, zero, rms = mom[sink.tensor]
        roots = analysis.roots(analysis.layouts[sink.tensor].axes[sink.axis])
        for r, z, s in zip(roots, zero, std):
            r = int(r)
            dead[r] = dead.get(r, True) and z >= DEAD
            const[r] = const.get(r, True) and s <= CONST * max(rms, 1e-30)
    free = [g for g in analysis.groups if not g.pinned and g.id in dead]
    t_rec = time.perf_counter()
    rec = reconstruction_scores(proto, analysis, cal, registry=registry, source=name)
    t_rec = time.perf_counter() - t_rec
    lin: dict[int, float] = {}
    for src in analysis.sources:
        for r, s in zip(analysis.roots(src.ids), rec[src.node]):
            if np.isfinite(s):
                lin[int(r)] = max(lin.get(int(r), 0.0), float(s))
    cats = {
        "dead": {g.id for g in free if dead[g.id]},
        "constant": {g.id for g in free if const[g.id] and not dead[g.id]},
        "linear": {g.id for g in free if not const[g.id] and lin.get(g.id, np.inf) <= LINEAR},
    }
    tracker = MacsTracker(analysis, known_macs(proto, analysis, registry, "measure", name), proto, registry)
    base = tracker.original
    channels = sum(len(g.members) for g in analysis.groups)
    removable = sum(len(g.members) for g in free)
    means = {t: m[0] for t, m in mom.items()}
    runner = TrialRunner(proto, analysis, held, source=name)
    out = {
        "channels": channels,
        "removable_channels": removable,
        "groups": len(analysis.groups),
        "removable_groups": len(free),
        "reconstruction_seconds": round(t_rec, 1),
    }
    so_far: set[int] = set()
    for cat in ("dead", "constant", "linear"):
        so_far |= cats[cat]
        plan = enforce_constraints(analysis, sorted(so_far), {})
        own = enforce_constraints(analysis, sorted(cats[cat]), {})
        out[cat] = {
            "groups": len(cats[cat]),
            "channels": sum(len(analysis.group(g).members) for g in cats[cat]),
            "macs_cut": (base - tracker.evaluate(own)) / base if base else 0.0,
            "cumulative_macs_cut": (base - tracker.evaluate(plan)) / base if base else 0.0,
            "cumulative_heldout_fidelity": runner.fidelity(sorted(plan), means) if plan else 1.0,
            "cumulative_heldout_fidelity_zero_fill": runner.fidelity(sorted(plan), None) if plan else 1.0,
        }
    # The linear channels are free only if the readers refit them: prune, reconstruct on the
    # calibration inputs, judge on the held-out ones, at a few error thresholds.
    from fidelity_real_cells import Judge

    from onnxprune.planning import PruningPlan
    from onnxprune.recovery import recover_model
    from onnxprune.surgery import apply_pruning

    judge = Judge(path, {"heldout": held})
    base_free = cats["dead"] | cats["constant"]
    out["refit"] = {}
    for limit in (1e-4, 1e-3, 1e-2):
        chosen = base_free | {g.id for g in free if lin.get(g.id, np.inf) <= limit}
        plan_ids = enforce_constraints(analysis, sorted(chosen), {})
        if not plan_ids:
            continue
        plan = PruningPlan("measure", tuple(sorted(plan_ids)))
        pruned = apply_pruning(proto, analysis, plan, registry=registry, estimates=means)
        rebuilt, _, _ = recover_model(
            proto, pruned, analysis, plan, cal, reconstruct=True, recalibrate=False, registry=registry, source=name
        )
        out["refit"][str(limit)] = {
            "channels": sum(len(analysis.group(g).members) for g in plan_ids),
            "macs_cut": (base - tracker.evaluate(plan_ids)) / base if base else 0.0,
            "heldout_masked": runner.fidelity(sorted(plan_ids), means),
            "heldout_reconstructed": judge(rebuilt, name)["heldout"],
        }
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="/work/corpus")
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--json")
    args = ap.parse_args()
    names = [n for n in ORDER if not args.only or any(s in n for s in args.only)]
    names = [n for n in names if "opennsfw" not in n]
    results = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).exists() else {}
    for name in names:
        r = measure(name, args.corpus)
        results[name] = r
        cells = " | ".join(
            f"{c}: {r[c]['channels']} ch, {r[c]['macs_cut']:.1%} MACs, cum {r[c]['cumulative_macs_cut']:.1%}"
            f" @ {r[c]['cumulative_heldout_fidelity']:.3f} (0-fill {r[c]['cumulative_heldout_fidelity_zero_fill']:.3f})"
            for c in ("dead", "constant", "linear")
        )
        refit = " | ".join(
            f"err<={k}: {v['channels']} ch {v['macs_cut']:.1%} masked {v['heldout_masked']:.3f} refit {v['heldout_reconstructed']:.3f}"
            for k, v in r["refit"].items()
        )
        print(
            f"{name}: {r['removable_channels']}/{r['channels']} removable ch | {cells} | {refit} | {r['seconds']} s",
            flush=True,
        )
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
