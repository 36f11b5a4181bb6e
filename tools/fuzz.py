"""The long property-based run: thousands of random CNNs (onnxprune.testing.random_cnn), each
pruned with the zero criterion (must be exact against the original), with a random lossy
criterion and ratio (must match the masked original), and from a file to a file without
verification, every new weight deferred and every unaligned weight sliced in small blocks
(the file written must be exact too). Records failures with their seeds. Writes
benchmarks/fuzz.md.

    python tools/fuzz.py [--count 2000] [--start 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx

import onnxprune
import onnxprune.edits as edits
import onnxprune.surgery as surgery
from onnxprune.testing import random_cnn

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "fuzz.md"))
    args = parser.parse_args()
    failures: list[str] = []
    removed = lossy_runs = zero_ok = file_ok = 0
    # Stress the file path: every new weight written from its array, unaligned views of the
    # file's bytes sliced a few rows at a time.
    surgery._DEFER_BYTES, edits._BLOCK_BYTES = 0, 64
    tmp = tempfile.mkdtemp()
    start = time.time()
    for seed in range(args.start, args.start + args.count):
        rng = np.random.default_rng(seed + 10**6)
        try:
            model = random_cnn(seed)
            r = onnxprune.prune(model, "zero")
            assert r.report.verification.passed
            zero_ok += 1
            removed += r.report.channels_removed
            crit = str(rng.choice(["l1", "l2", "fpgm", "random", "kmeans"]))
            ratio = float(rng.uniform(0.05, 0.7))
            r = onnxprune.prune(model, crit, ratio=ratio, seed=seed, global_ranking=bool(rng.integers(0, 2)))
            assert r.report.verification.passed
            lossy_runs += 1
            src, out = f"{tmp}/m.onnx", f"{tmp}/o.onnx"
            onnx.save(model, src)
            onnxprune.prune(src, "zero", verify=False, output=out)
            assert onnxprune.verify(model, onnx.load(out)).passed
            file_ok += 1
        except Exception as exc:  # record and go on: the point is to find them all
            failures.append(f"seed {seed}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            traceback.print_exc()
    seconds = time.time() - start
    text = [
        "# Property-based fuzzing (tools/fuzz.py)",
        "",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Seeds {args.start}..{args.start + args.count - 1}: "
        f"{args.count} random CNNs (onnxprune.testing.random_cnn: residual adds, concats, splits, grouped and depthwise "
        "convs, SE gates, channel shuffles, Flatten/GAP -> Gemm; opsets 11/13/17; random zeroed filters).",
        "",
        f"- zero criterion: {zero_ok} exact of {args.count}; {removed} channels removed in all",
        f"- lossy (random criterion, ratio 0.05-0.7, per-layer or global): {lossy_runs} matched the masked original",
        f"- file to file, unverified, every new weight deferred, unaligned weights sliced in blocks: {file_ok} exact",
        f"- failures: {len(failures)}",
        *[f"  - {f}" for f in failures],
        f"- time: {seconds:.0f} s ({seconds / max(args.count, 1):.2f} s per model, all three runs)",
    ]
    Path(args.out).write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
