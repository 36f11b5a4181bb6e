"""Surgery cost, analysis scaling and start-up time. Writes benchmarks/surgery.md.

1. ``onnxprune prune --criterion zero --no-verify`` against a bare ``onnx.load`` + ``onnx.save``
   of the same file, each a fresh process, interleaved, median of N runs: wall time and peak
   memory (max RSS of the process, from the OS). Targets: <= 1.5x both.
2. Analysis time against layer count on synthetic chains with residual blocks (100 .. 5000
   layers): should grow linearly.
3. ``onnxprune --help`` wall time (target < 0.3 s).

    python tools/bench_surgery.py --models /work/zoo/resnet50.onnx,/work/zoo/vgg11_bn.onnx [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOAD_SAVE = "import onnx, sys; m = onnx.load(sys.argv[1]); onnx.save(m, sys.argv[2])"


def _measure(cmd: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MB) of one run of ``cmd``."""
    # ru_maxrss of RUSAGE_CHILDREN is the max over all children so far: measure each run in
    # its own wrapper process so the figure belongs to this command alone.
    wrapper = [
        sys.executable,
        "-c",
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter(); r = subprocess.run(sys.argv[1:]).returncode\n"
        "w = time.perf_counter() - t; u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(w, u.ru_utime + u.ru_stime, u.ru_maxrss / 1024.0, r)",
        *cmd,
    ]
    out = subprocess.run(wrapper, capture_output=True, text=True, check=True).stdout.split()
    if out[3] != "0":
        raise RuntimeError(f"{cmd} failed")
    return float(out[0]), float(out[1]), float(out[2])


def _fresh(path: str) -> None:
    """Each run writes a new file, with nothing of the last run's output waiting to be
    written: replacing an existing file and the writing back of dirty pages would otherwise
    be charged to whichever command runs next."""
    if os.path.exists(path):
        os.remove(path)
    os.sync()


def surgery(models: list[str], runs: int) -> list[dict]:
    # Byte-compile the package as `pip install` does: with PYTHONDONTWRITEBYTECODE set (as on
    # this machine) an editable checkout would otherwise be compiled again by every run, while
    # onnx, the other side, comes compiled.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "onnxprune")], check=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            prune_cmd = [sys.executable, "-m", "onnxprune", "prune", model, "-o", f"{tmp}/p.onnx", "--no-verify", "-q"]
            base_cmd = [sys.executable, "-c", LOAD_SAVE, model, f"{tmp}/s.onnx"]
            a, b = [], []
            for k in range(runs):  # A B, then B A: neither always runs on the other's heels
                for which in (0, 1) if k % 2 == 0 else (1, 0):
                    _fresh(f"{tmp}/p.onnx" if which == 0 else f"{tmp}/s.onnx")
                    (a if which == 0 else b).append(_measure(prune_cmd if which == 0 else base_cmd))
            ratios = sorted(x[0] / y[0] for x, y in zip(a, b))
            rows.append(
                {
                    "model": os.path.basename(model),
                    "size_mb": os.path.getsize(model) / 2**20,
                    "prune_s": statistics.median(x[0] for x in a),
                    "load_save_s": statistics.median(x[0] for x in b),
                    "prune_cpu_s": statistics.median(x[1] for x in a),
                    "load_save_cpu_s": statistics.median(x[1] for x in b),
                    "prune_mb": statistics.median(x[2] for x in a),
                    "load_save_mb": statistics.median(x[2] for x in b),
                    "time_ratio": statistics.median(ratios),
                    "time_ratio_min": ratios[0],
                    "time_ratio_max": ratios[-1],
                }
            )
            print(rows[-1], flush=True)
    return rows


def scaling(sizes: list[int]) -> list[dict]:
    import onnxprune
    from onnxprune.testing import GraphBuilder

    rows = []
    for n in sizes:
        b = GraphBuilder(opset=17, seed=0)
        x = b.input("x", [None, 8, 8, 8])
        y = x
        layers = 0
        while layers < n:
            h = b.op("Relu", b.conv(y, 8, k=1, pads=0, zero=(1,)))
            h = b.conv(h, 8, k=1, pads=0)
            y = b.op("Add", y, h)
            layers += 2
        b.output(b.conv(y, 4, k=1, pads=0), shape=[None, 4, 8, 8])
        model = b.build()
        start = time.perf_counter()
        analysis = onnxprune.analyze(model)
        seconds = time.perf_counter() - start
        rows.append(
            {"layers": layers, "nodes": len(model.graph.node), "analyze_s": seconds, "groups": len(analysis.groups)}
        )
        print(rows[-1], flush=True)
    return rows


def _big_model(folder: str, zero_rows: int) -> str:
    """A 2.3 GB MLP (two 17,000 x 17,000 Gemm weights) saved with external data; the first
    ``zero_rows`` output features of both big layers are zero."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n, rng = 17000, np.random.default_rng(0)
    inits = []
    for name, shape in (("w0", (n, 64)), ("w1", (n, n)), ("w2", (n, n)), ("w3", (64, n))):
        w = rng.standard_normal(shape, dtype=np.float32)
        if name in ("w1", "w2"):
            w[:zero_rows] = 0
        inits.append(numpy_helper.from_array(w, name))
        del w
    nodes, x = [], "x"
    for i in range(4):
        y = "y" if i == 3 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [x, f"w{i}"], [y], transB=1, name=f"gemm{i}"))
        if i in (1, 2):
            nodes.append(helper.make_node("Relu", [y], [f"r{i}"], name=f"relu{i}"))
            y = f"r{i}"
        x = y
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        inits,
    )
    path = os.path.join(folder, f"mlp_{zero_rows}.onnx")
    onnx.save_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=os.path.basename(path) + ".data",
    )
    return path


def big(zero_rows: tuple[int, ...] = (50, 4000)) -> list[dict]:
    """Models over the 2 GB protobuf limit, with and without verification: one run each."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for z in zero_rows:
            model = _big_model(tmp, z)
            for flags in (["--no-verify"], []):
                out = f"{tmp}/out.onnx"
                wall, cpu, peak = _measure([sys.executable, "-m", "onnxprune", "prune", model, "-o", out, "-q", *flags])
                written = sum(os.path.getsize(p) for p in (out, out + ".data") if os.path.exists(p))
                rows.append(
                    {
                        "zero_rows": z,
                        "verify": not flags,
                        "wall_s": wall,
                        "cpu_s": cpu,
                        "peak_mb": peak,
                        "in_mb": sum(os.path.getsize(p) for p in (model, model + ".data")) / 2**20,
                        "out_mb": written / 2**20,
                        "external": os.path.exists(out + ".data"),
                    }
                )
                print(rows[-1], flush=True)
                for p in (out, out + ".data"):
                    if os.path.exists(p):
                        os.remove(p)
            os.remove(model)
            os.remove(model + ".data")
    return rows


def help_time(runs: int = 10) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "onnxprune", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="/work/zoo/resnet50.onnx,/work/zoo/vgg11_bn.onnx")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--sizes", default="100,500,1000,2000,5000")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "surgery.md"))
    parser.add_argument(
        "--big", action="store_true", help="also models over 2 GB (needs ~7 GB of disk, ~10 GB of memory)"
    )
    args = parser.parse_args()
    surg = surgery(args.models.split(","), args.runs)
    large = big() if args.big else []
    scale = scaling([int(s) for s in args.sizes.split(",")])
    helps = help_time()
    lines = [
        "# Surgery cost, analysis scaling, start-up",
        "",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores; "
        f"median of {args.runs} runs of each, alternating (A B, B A, ...), each a fresh process writing a new file "
        "after `sync`. Made by `tools/bench_surgery.py`.",
        "",
        "## prune --criterion zero --no-verify vs onnx.load + onnx.save",
        "",
        "Time ratio: the median of the run-by-run ratios (min–max in brackets); on this virtual machine the",
        "kernel's cost of fresh memory and page cache varies from run to run by up to 2x for either command.",
        "",
        "| model | size | prune wall | load+save wall | time ratio | prune CPU | load+save CPU | prune peak RSS | load+save peak RSS | memory ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in surg:
        lines.append(
            f"| {r['model']} | {r['size_mb']:.0f} MB | {r['prune_s']:.2f} s | {r['load_save_s']:.2f} s "
            f"| {r['time_ratio']:.2f}x ({r['time_ratio_min']:.2f}–{r['time_ratio_max']:.2f}) "
            f"| {r['prune_cpu_s']:.2f} s | {r['load_save_cpu_s']:.2f} s "
            f"| {r['prune_mb']:.0f} MB | {r['load_save_mb']:.0f} MB | {r['prune_mb'] / r['load_save_mb']:.2f}x |"
        )
    lines += [
        "",
        "## Analysis time against layer count (synthetic residual chains)",
        "",
        "| conv layers | nodes | analyze | per layer |",
        "|---:|---:|---:|---:|",
    ]
    for r in scale:
        lines.append(
            f"| {r['layers']} | {r['nodes']} | {r['analyze_s']:.2f} s | {r['analyze_s'] / r['layers'] * 1e3:.2f} ms |"
        )
    if large:
        lines += [
            "",
            "## Over the 2 GB protobuf limit (one run each)",
            "",
            "A synthetic MLP of two 17,000 x 17,000 Gemm weights (2.2 GiB, external data); the first N output",
            "features of both big layers zeroed. Outputs over the limit are written with external data.",
            "",
            "| zeroed rows | verification | input | output | external data | wall | peak RSS |",
            "|---:|---|---:|---:|---|---:|---:|",
        ]
        for r in large:
            lines.append(
                f"| {r['zero_rows']} | {'yes' if r['verify'] else 'no'} | {r['in_mb']:.0f} MB | {r['out_mb']:.0f} MB "
                f"| {'yes' if r['external'] else 'no'} | {r['wall_s']:.1f} s | {r['peak_mb']:.0f} MB |"
            )
    lines += [
        "",
        "## Start-up",
        "",
        f"`python -m onnxprune --help`: median {helps:.3f} s over 10 runs (target < 0.3 s).",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
