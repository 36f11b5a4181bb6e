"""Fidelity-guided pruning benchmark: the MACs cut reached at fidelity >= 0.99 and >= 0.95 on
held-out inputs, for uniform L2 (the largest ratio whose calibration fidelity meets the target)
and sensitivity-allocated L2 (``--min-fidelity``), each plain, with calibration compensation,
and with reconstruction; plus top-1 accuracy when labels are known. Plans are chosen on the
calibration inputs and judged on different, held-out ones.

    python tools/bench_fidelity.py                      # the digits CNN (fixtures/), with accuracy
    python tools/bench_fidelity.py --zoo /work/zoo-clean --models resnet18,mobilenet_v2
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx

import onnxprune
from onnxprune.fidelity import top1_agreement
from onnxprune.runtime import session

ROOT = Path(__file__).resolve().parent.parent
RATIOS = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
VARIANTS = {
    "plain": dict(compensation="none"),
    "compensation": dict(compensation="calibration"),
    "reconstruction": dict(compensation="calibration", reconstruct=True),
}


def outputs(model: onnx.ModelProto | str, x: np.ndarray, name: str) -> np.ndarray:
    run = session(model, source=model if isinstance(model, str) else "<pruned model>", optimize=True)
    return np.concatenate([run({name: x[i : i + 16]})[0] for i in range(0, len(x), 16)])


def bench_model(model: Path, calib: str, x_eval: np.ndarray, labels: np.ndarray | None, input_name: str) -> list[dict]:
    ref = outputs(str(model), x_eval, input_name)
    rows = []
    common = dict(calibration=calib, verification_inputs=calib, calibration_limit=64)
    for vname, opts in VARIANTS.items():
        sweep = []  # (ratio, calibration fidelity, result)
        for ratio in RATIOS:
            r = onnxprune.prune(model, "l2", ratio=ratio, **common, **opts)
            sweep.append((ratio, r.report.fidelity_score, r))
            if r.report.fidelity_score < 0.95:
                break
        for target in (0.99, 0.95):
            ok = [s for s in sweep if s[1] >= target]
            if ok:
                ratio, _, r = ok[-1]
                rows.append(_row(target, f"uniform L2 {ratio:.2f}", vname, r, ref, x_eval, labels, input_name))
            else:
                rows.append(
                    {
                        "target": target,
                        "plan": "uniform L2 (none holds)",
                        "variant": vname,
                        "macs_cut": 0.0,
                        "agreement": 1.0,
                        "accuracy": None,
                    }
                )
            r = onnxprune.prune(model, "l2", min_fidelity=target, **common, **opts)
            rows.append(_row(target, "sensitivity-allocated L2", vname, r, ref, x_eval, labels, input_name))
            print(rows[-2], rows[-1], flush=True)
    for vname, opts in VARIANTS.items():
        r = onnxprune.prune(model, "l2", min_fidelity=0.01, macs_target=0.7, **common, **opts)
        rows.append(_row("MACs <= 0.7", "sensitivity-allocated L2", vname, r, ref, x_eval, labels, input_name))
        print(rows[-1], flush=True)
    return rows


def _row(target, plan, variant, r, ref, x_eval, labels, input_name) -> dict:
    got = outputs(r.model, x_eval, input_name)
    return {
        "target": target,
        "plan": plan,
        "variant": variant,
        "macs_cut": 1 - r.report.macs_after / r.report.macs_before,
        "agreement": top1_agreement(ref, got),
        "accuracy": None if labels is None else float((got.argmax(1) == labels).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", help="folder of tools/export_zoo.py models (default: the digits CNN)")
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument(
        "--samples", type=int, default=32, help="zoo: seeded random calibration and held-out images each"
    )
    args = parser.parse_args()
    start = time.time()
    results: dict[str, list[dict]] = {}
    header = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.zoo is None:
            test = np.load(ROOT / "fixtures" / "digits_test.npz")
            base = float(
                (
                    outputs(str(ROOT / "fixtures" / "digits_cnn.onnx"), test["input"], "input").argmax(1)
                    == test["labels"]
                ).mean()
            )
            results["digits_cnn"] = bench_model(
                ROOT / "fixtures" / "digits_cnn.onnx",
                str(ROOT / "fixtures" / "digits_calibration.npz"),
                test["input"],
                test["labels"],
                "input",
            )
            header.append(
                f"Digits CNN (`fixtures/digits_cnn.onnx`, tools/train_digits.py): calibration = 64 training images, held-out = 540 test images; unpruned accuracy **{base * 100:.2f}%**."
            )
            out = ROOT / "benchmarks" / "fidelity"
        else:
            rng = np.random.default_rng(0)
            for name in args.models.split(","):
                model = Path(args.zoo) / f"{name}.onnx"
                import onnx

                inp = onnx.load(model, load_external_data=False).graph.input[0]
                dims = [d.dim_value for d in inp.type.tensor_type.shape.dim][1:]
                calib = f"{tmp}/{name}.npz"
                np.savez(calib, **{inp.name: rng.standard_normal((args.samples, *dims)).astype(np.float32)})
                x_eval = rng.standard_normal((args.samples, *dims)).astype(np.float32)
                results[name] = bench_model(model, calib, x_eval, None, inp.name)
            header.append(
                f"Zoo models from `{args.zoo}` (random weights): {args.samples} seeded random calibration images, {args.samples} different held-out ones; fidelity = top-1 agreement with the original."
            )
            out = ROOT / "benchmarks" / "fidelity_zoo"
    seconds = time.time() - start
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    lines = [
        "# Fidelity-guided pruning" + (": digits CNN" if args.zoo is None else ": zoo models"),
        "",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.machine()}, 2 cores, onnxprune {onnxprune.__version__}; "
        f"run time {seconds:.0f} s. Made by `tools/bench_fidelity.py{'' if args.zoo is None else ' --zoo ' + args.zoo}`.",
        "",
        *header,
        "",
        "Uniform = the largest per-layer L2 ratio (steps of 0.05) whose calibration fidelity meets the target; allocated = "
        "`--min-fidelity` (per-unit ratios from the sensitivity analysis); both judged on the held-out inputs.",
    ]
    for name, rows in results.items():
        lines += [
            "",
            f"## {name}",
            "",
            "| fidelity target | plan | variant | MACs cut | held-out agreement | held-out accuracy |",
            "|---|---|---|---:|---:|---:|",
        ]
        for r in rows:
            acc = "" if r["accuracy"] is None else f"{r['accuracy'] * 100:.2f}%"
            lines.append(
                f"| {r['target']} | {r['plan']} | {r['variant']} | {r['macs_cut'] * 100:.1f}% | {r['agreement'] * 100:.1f}% | {acc} |"
            )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
