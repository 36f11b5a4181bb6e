"""Fidelity-guided pruning benchmark on the digits CNN (fixtures/digits_cnn.onnx): the MACs
cut reached at fidelity >= 0.99 and >= 0.95, for uniform L2 (the largest ratio that keeps the
fidelity) and sensitivity-allocated L2 (``--min-fidelity``), each plain, with calibration
compensation, and with reconstruction; plus top-1 accuracy. Both kinds of plan are chosen on
the calibration inputs (64 training images) and evaluated on the 540 held-out images.
Writes benchmarks/fidelity.md and .json.

    python tools/bench_fidelity.py
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort

import onnxprune

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "fixtures" / "digits_cnn.onnx"
CALIB = str(ROOT / "fixtures" / "digits_calibration.npz")
RATIOS = [round(0.05 * i, 2) for i in range(1, 13)]


def evaluate(model_bytes: bytes, x: np.ndarray, labels: np.ndarray, ref_logits: np.ndarray) -> tuple[float, float]:
    logits = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    acc = float((logits.argmax(1) == labels).mean())
    agree = float((logits.argmax(1) == ref_logits.argmax(1)).mean())
    return acc, agree


def main() -> None:
    test = np.load(ROOT / "fixtures" / "digits_test.npz")
    x, labels = test["input"], test["labels"]
    ref_logits = ort.InferenceSession(MODEL.read_bytes(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    base_acc = float((ref_logits.argmax(1) == labels).mean())
    # fidelity during planning: on the calibration images (train split), top-1 agreement
    rows = []
    start = time.time()
    variants = {"plain": dict(compensation="none"), "compensation": dict(compensation="calibration"), "reconstruction": dict(compensation="calibration", reconstruct=True)}
    with tempfile.TemporaryDirectory() as tmp:
        evalset = f"{tmp}/eval.npz"
        np.savez(evalset, input=x[:256])
        for target in (0.99, 0.95):
            for vname, opts in variants.items():
                best = None
                for ratio in RATIOS:  # uniform: the largest ratio whose calibration fidelity holds
                    r = onnxprune.prune(MODEL, "l2", ratio=ratio, calibration=CALIB, verification_inputs=CALIB, calibration_limit=64, **opts)
                    if r.report.extra["fidelity_score"] >= target:
                        best = (ratio, r)
                    else:
                        break
                if best is not None:
                    ratio, r = best
                    acc, agree = evaluate(r.model.SerializeToString(), x, labels, ref_logits)
                    rows.append({"target": target, "plan": f"uniform L2 {ratio:.2f}", "variant": vname,
                                 "macs_cut": 1 - r.report.macs_after / r.report.macs_before, "accuracy": acc, "agreement": agree})
                else:
                    rows.append({"target": target, "plan": "uniform L2 (none holds)", "variant": vname, "macs_cut": 0.0, "accuracy": base_acc, "agreement": 1.0})
                r = onnxprune.prune(MODEL, "l2", min_fidelity=target, calibration=CALIB, verification_inputs=CALIB, calibration_limit=64, **opts)
                acc, agree = evaluate(r.model.SerializeToString(), x, labels, ref_logits)
                rows.append({"target": target, "plan": "sensitivity-allocated L2", "variant": vname,
                             "macs_cut": 1 - r.report.macs_after / r.report.macs_before, "accuracy": acc, "agreement": agree})
                print(rows[-2], rows[-1], flush=True)
        # accuracy at >= 30% MACs cut with reconstruction (allocated to reach the MACs target)
        for vname, opts in variants.items():
            r = onnxprune.prune(MODEL, "l2", min_fidelity=0.5, macs_target=0.7, calibration=CALIB, verification_inputs=CALIB, calibration_limit=64, **opts)
            acc, agree = evaluate(r.model.SerializeToString(), x, labels, ref_logits)
            rows.append({"target": "MACs <= 0.7", "plan": "sensitivity-allocated L2", "variant": vname,
                         "macs_cut": 1 - r.report.macs_after / r.report.macs_before, "accuracy": acc, "agreement": agree})
            print(rows[-1], flush=True)
    seconds = time.time() - start
    (ROOT / "benchmarks" / "fidelity.json").write_text(json.dumps(rows, indent=1))
    lines = [
        "# Fidelity-guided pruning: digits CNN",
        "",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.machine()}, onnxprune {onnxprune.__version__}; run time {seconds:.0f} s. "
        f"Made by `tools/bench_fidelity.py`. Unpruned held-out accuracy **{base_acc * 100:.2f}%** (540 images).",
        "",
        "Plans are chosen on the 64 calibration images (fidelity = top-1 agreement with the original); the table "
        "reports the 540 held-out images: top-1 agreement with the original, and accuracy. Uniform = the largest "
        "per-layer L2 ratio (steps of 0.05) whose calibration fidelity meets the target; allocated = "
        "`--min-fidelity` (per-unit ratios from the sensitivity analysis).",
        "",
        "| fidelity target | plan | variant | MACs cut | held-out agreement | held-out accuracy |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['target']} | {r['plan']} | {r['variant']} | {r['macs_cut'] * 100:.1f}% | {r['agreement'] * 100:.1f}% | {r['accuracy'] * 100:.2f}% |")
    (ROOT / "benchmarks" / "fidelity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
