#!/usr/bin/env python3
"""Run OpenVINO's own filter-pruning pass on an ONNX model and measure it (prints JSON).

The code lives in ``onnxprune.openvino_pass`` (also used by ``prune --compare-openvino``).

    python tools/openvino_pruning.py MODEL.onnx [--seed N] [--no-check] [--layers]
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback

from onnxprune.openvino_pass import compare_outputs, layer_stats, run_openvino_pruning  # noqa: F401 - re-exported for tools


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("onnx", help="path to an .onnx model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-check", action="store_true", help="skip the CPU output comparison")
    ap.add_argument("--layers", action="store_true", help="include per-layer channel changes")
    args = ap.parse_args(argv)
    try:
        res = run_openvino_pruning(args.onnx, seed=args.seed, check=not args.no_check)
    except Exception as e:  # conversion failures etc.
        res = {"model": args.onnx, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    if not args.layers:
        res.pop("layers_changed", None)
    print(json.dumps(res, indent=1, default=str))
    return 0 if not res.get("error") else 1


if __name__ == "__main__":
    sys.exit(main())
