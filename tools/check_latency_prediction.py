"""Latency table predictions against measurement: prune a model uniformly (L2, 25% and 50% of
every layer), predict its latency ratio from the table (the units' savings summed, and
onnxprune's overlap-corrected and calibrated prediction) and measure it (interleaved A/B).

Usage: python tools/check_latency_prediction.py MODEL.onnx [--threads N] [--input-shape NAME:dims]
       [--cache-dir DIR]   (one JSON line per ratio on stdout)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import onnxprune
from onnxprune.latency import LatencySettings, build_table, measure_ab


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--input-shape", action="append", default=[])
    ap.add_argument("--cache-dir")
    args = ap.parse_args()
    shapes = {}
    for spec in args.input_shape:
        name, dims = spec.split(":")
        shapes[name] = tuple(int(d) for d in dims.split(","))
    settings = LatencySettings(threads=args.threads)
    table = build_table(args.model, settings, input_shapes=shapes, cache_dir=args.cache_dir)
    with tempfile.TemporaryDirectory() as tmp:
        for ratio in (0.25, 0.5):
            result = onnxprune.prune(args.model, "l2", ratio=ratio, verify=False, input_shapes=shapes)
            pruned = os.path.join(tmp, f"l2_{ratio}.onnx")
            result.save(pruned)
            removed = set(result.plan.removed_groups)
            kept = {}
            for u in table.units.values():
                layers = set(u.layers)
                n = sum(1 for g in removed if any(node in layers for node, _ in result.plan.members.get(g, ())))
                if n:
                    kept[u.unit] = u.channels - n
            summed = 1 - sum(table.units[n].saving(k) for n, k in kept.items()) / table.baseline
            ab = measure_ab(args.model, pruned, settings, rounds=15, seconds=6.0, input_shapes=shapes)
            row = {
                "model": os.path.basename(args.model),
                "threads": args.threads,
                "ratio": ratio,
                "macs_ratio": result.report.macs_after / result.report.macs_before,
                "predicted_summed": summed,
                "predicted": table.predicted_latency(kept) / table.baseline,
                "measured": ab.ratio,
                "measured_p10": ab.ratio_p10,
                "measured_p90": ab.ratio_p90,
                "original_ms": ab.original * 1e3,
                "table_scale": table.scale,
                "load": os.getloadavg()[0],
            }
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
