"""Time to build a latency table (onnxprune latency-table) for a few models, and to reuse it.

Usage: python tools/bench_latency_table.py [--out benchmarks/latency_table] [--seconds-per-unit S]

Each model's table is built with a fresh cache folder (OpenVINO CPU, f32, batch 1, latency
hint), then read back twice: once in this process, once by the CLI in a new process (what a
user sees: Python start-up included). The machine is shared: the load average before and after
each build is recorded, so numbers can be read against it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from onnxprune.latency import LatencySettings, build_table

MODELS = [
    ("MobileNetV2 (zoo, NNCF-zeroed)", "/work/zoo-nncf/mobilenet_v2.onnx", {}),
    ("EfficientNet-B0 (zoo, NNCF-zeroed)", "/work/zoo-nncf/efficientnet_b0.onnx", {}),
    ("ResNet-50 (zoo, NNCF-zeroed)", "/work/zoo-nncf/resnet50.onnx", {}),
    ("YOLO26n ISBN detector (corpus)", "/work/corpus/yolo26n_isbn_det_torch.onnx", {"images": (1, 3, 640, 640)}),
    ("PP-LCNet table classifier (corpus)", "/work/corpus/pplcnet_table_orient_cls_paddle.onnx", {}),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/latency_table")
    ap.add_argument("--seconds-per-unit", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--only", action="append", default=[])
    args = ap.parse_args()
    rows = []
    settings = LatencySettings()
    for label, path, shapes in MODELS:
        if args.only and not any(o in path for o in args.only):
            continue
        with tempfile.TemporaryDirectory() as cache:
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            table = build_table(
                path, settings, input_shapes=shapes, cache_dir=cache, rounds=args.rounds,
                seconds_per_unit=args.seconds_per_unit,
            )  # fmt: skip
            build = time.perf_counter() - t0
            load1 = os.getloadavg()[0]
            t0 = time.perf_counter()
            again = build_table(path, settings, input_shapes=shapes, cache_dir=cache)
            reuse = time.perf_counter() - t0
            assert again.cached
            cmd = [sys.executable, "-m", "onnxprune", "latency-table", path, "--cache-dir", cache]
            for k, v in shapes.items():
                cmd += ["--input-shape", f"{k}:{','.join(map(str, v))}"]
            t0 = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
            cli = time.perf_counter() - t0
            assert out.returncode == 0 and "(read from the cache)" in out.stdout, out.stderr
            text = out.stdout
        steps = collections.Counter("-" if u.step is None else str(u.step) for u in table.units.values())
        rows.append(
            {
                "model": label,
                "path": path,
                "units": len(table.units),
                "variants": sum(len(u.points) for u in table.units.values()),
                "baseline_ms": table.baseline * 1e3,
                "build_s": build,
                "reuse_in_process_s": reuse,
                "reuse_cli_s": cli,
                "load_before": load0,
                "load_after": load1,
                "steps": dict(steps),
                "notes": list(table.notes),
                "table_text": text,
                "table": table.to_dict(),
            }
        )
        print(f"{label}: {len(table.units)} units, build {build:.1f} s, reuse {reuse:.3f} s in process, "
              f"{cli:.2f} s CLI, load {load0:.1f}->{load1:.1f}, steps {dict(steps)}", flush=True)  # fmt: skip
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "cpu": rows[0]["table"]["key"]["cpu"] if rows else "",
        "runtime": rows[0]["table"]["key"]["runtime"] if rows else "",
        "settings": settings.to_dict(),
        "seconds_per_unit": args.seconds_per_unit,
        "rounds": args.rounds,
    }
    with open(args.out + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(render(meta, rows))
    return 0


def render(meta: dict, rows: list[dict]) -> str:
    lines = [
        "# Latency table: build time and cache reuse",
        "",
        f"Date: {meta['date']}  ",
        f"Machine: {meta['machine']}, {meta['cpu']}; {meta['runtime']}  ",
        f"Settings: OpenVINO CPU, f32, batch 1, LATENCY hint, threads auto; {meta['rounds']} interleaved rounds, "
        f"{meta['seconds_per_unit']} s of timing per unit  ",
        "Produced by: `python tools/bench_latency_table.py`",
        "",
        "**Shared machine.** This 2-core VM was shared with about 7 other agents running tests and "
        "benchmarks while these tables were built (load average in the table: 2.0 means both cores busy "
        "on average). Absolute latencies are inflated and noisy under such load; a build's duration "
        "too (compilation competes for the cores). The method is designed for it (interleaved "
        "rotating rounds, a round's fastest run, medians over rounds, steps believed only beyond the "
        "medians' uncertainty), but a table built on a quiet machine is better.",
        "",
        "| model | units | variants timed | baseline ms | build s | reuse s (in process) | reuse s (CLI, new process) | load avg before → after | steps found (step: units) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        steps = ", ".join(
            f"{k}: {v}" for k, v in sorted(r["steps"].items(), key=lambda kv: (kv[0] == "-", kv[0].zfill(3)))
        )
        lines.append(
            f"| {r['model']} | {r['units']} | {r['variants']} | {r['baseline_ms']:.2f} | {r['build_s']:.1f} | "
            f"{r['reuse_in_process_s']:.3f} | {r['reuse_cli_s']:.2f} | {r['load_before']:.1f} → {r['load_after']:.1f} | {steps} |"
        )
    lines += ["", "Targets: build ≤ 5 min per model on 2 cores; reuse from the cache < 1 s.", ""]
    for r in rows:
        if r["notes"]:
            lines += [f"Notes for {r['model']}:", ""] + [f"- {n}" for n in r["notes"]] + [""]
    for r in rows:
        lines += [f"## {r['model']}", "", "```", r["table_text"].rstrip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
