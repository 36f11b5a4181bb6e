#!/usr/bin/env python3
"""onnxprune on real third-party exports: the development corpus and the NNCF exports.

For every model (the 13 corpus files described in ../shared/corpus/CORPUS.md and the 12 files
written by tools/export_nncf.py), each case in its own subprocess with a timeout, one at a time:

* ``zero``    -- ``prune --criterion zero --compare-openvino`` on the file as exported;
* ``zeroed``  -- the same after NNCF-style zeroing of 25% of the filters (tools/zero_filters.py);
* ``l2``      -- ``prune --criterion l2 --ratio 0.25``;
* ``convert`` -- ``convert`` to OpenVINO IR (checked against onnxruntime).

Every case gets the model's suggested static shape from CORPUS.md (``--input-shape``); Silero
VAD gets realistic data instead (``--inputs``: a 576-sample frame, sr=16000, zero state), so its
shapes come from the data. Recorded: exit code, the error line, channels and MACs removed (and
whether the MACs are known), OpenVINO's pass on the same file, verification (worst output's
diff, noise floor, limit, runtime) and the wall time. ``--exit 3`` is an internal error.

Writes ``benchmarks/real_exports.json`` after every case and ``benchmarks/real_exports.md`` at
the end (text below its ``<!-- notes -->`` line is kept).

    . /work/venv/bin/activate
    PYTHONPATH=$PWD python tools/bench_real_exports.py [--corpus /work/corpus]
        [--nncf /work/nncf_exports] [--only NAME-SUBSTRING] [--cases zero,zeroed,l2,convert]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from real_exports_report import CASES, summary, write_md  # noqa: E402

# file -> (suggested static shapes from CORPUS.md, realistic feed builder or None, timeout s)
CORPUS: dict[str, tuple[dict[str, tuple[int, ...]], str | None, int]] = {
    "opennsfw_resnet50_tf2onnx_nhwc.onnx": ({"input:0": (1, 224, 224, 3)}, None, 600),
    "resnet18_malimg_torchdynamo_extdata.onnx": ({"input": (1, 3, 224, 224)}, None, 600),
    "pplcnet_table_orient_cls_paddle.onnx": ({"input": (1, 3, 624, 624)}, None, 600),
    "dbnet_table_edge_paddle_convinteger.onnx": ({"input": (1, 3, 800, 800)}, None, 1500),
    "yolo26n_isbn_det_torch.onnx": ({"images": (1, 3, 640, 640)}, None, 600),
    "picodet_layout_cdla_paddle.onnx": ({"image": (1, 3, 800, 608)}, None, 600),
    "ppocrv6_det_tiny_paddle.onnx": ({"x": (1, 3, 640, 640)}, None, 600),
    "ppocrv6_rec_tiny_paddle_int8w.onnx": ({"x": (1, 3, 48, 320)}, None, 600),
    "crnn_captcha_torch.onnx": ({"image": (1, 3, 60, 160)}, None, 600),
    "basic_pitch_nmp_tf2onnx.onnx": ({"serving_default_input_2:0": (1, 43844, 1)}, None, 600),
    "oww_speech_embedding_tf2onnx_nhwc.onnx": ({"input_1": (1, 76, 32, 1)}, None, 600),
    "silero_vad_op18_torchdynamo_if.onnx": ({"input": (1, 576), "state": (2, 1, 128)}, "silero", 600),
    "vcb_captcha_cnn_tf2onnx_nhwc.onnx": ({"input": (1, 50, 155, 3)}, None, 600),
}
NNCF_NETS = ("digits", "resnet", "mobilenet")
NNCF_FORMS = ("float", "fq", "qdq", "qdq_strip")


def _feeds(kind: str) -> dict[str, np.ndarray]:
    """Realistic inputs where a random one is meaningless (Silero: sr selects the branch)."""
    rng = np.random.default_rng(0)
    if kind == "silero":  # 16 kHz: a 512-sample frame with the previous 64 samples prepended
        t = np.arange(576) / 16000.0
        wave = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(576)
        return {
            "input": wave[None].astype(np.float32),
            "sr": np.array([16000], np.int64),
            "state": np.zeros((1, 2, 1, 128), np.float32),
        }  # one whole [2, B, 128] state
    raise ValueError(kind)


def _shape_args(shapes: dict[str, tuple[int, ...]]) -> list[str]:
    return [a for n, s in shapes.items() for a in ("--input-shape", f"{n}:{','.join(map(str, s))}")]


def _run(cmd: list[str], timeout: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy(), check=False)
    except subprocess.TimeoutExpired:
        return {"exit": None, "error": f"timeout after {timeout} s", "seconds": round(time.perf_counter() - t0, 1)}
    err = [line for line in p.stderr.splitlines() if line.startswith("onnxprune:") or "Error" in line]
    return {
        "exit": p.returncode,
        "error": (err[-1] if err else (p.stderr.strip().splitlines() or [""])[-1])[:400] if p.returncode else None,
        "seconds": round(time.perf_counter() - t0, 1),
        "stdout": p.stdout[-2000:],
    }


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    v = report.get("verification") or {}
    ov = report.get("openvino_pass") or {}
    out = {
        "channels_total": report.get("channels_total"),
        "channels_removed": report.get("channels_removed"),
        "macs_before": report.get("macs_before"),
        "macs_after": report.get("macs_after"),
        "macs_complete": report.get("macs_complete"),
        "verified": v.get("passed"),
        "max_abs_diff": v.get("max_abs_diff"),
        "noise_floor": v.get("noise_floor"),
        "limit": v.get("limit"),
        "scale": v.get("scale"),
        "runtime": v.get("runtime"),
        "worst_output": v.get("worst_output"),
        "noise_runtime": v.get("noise_runtime"),  # why a noise floor is missing
        "quantized": v.get("quantized"),  # the rounding rule and every path it was proved on
        "notes": report.get("notes", []),
    }
    if ov:
        ver = ov.get("verification") or {}
        out["openvino"] = {
            "error": ov.get("error"),
            "channels_removed": ov.get("channels_removed"),
            "conv_channels_removed": ov.get("conv_channels_removed"),
            "macs_before": ov.get("macs_before"),
            "macs_after": ov.get("macs_after"),
            "exact": ver.get("exact"),
        }
    return out


def bench_model(
    path: Path, shapes: dict, feeds: str | None, timeout: int, cases: tuple[str, ...], tmp: Path
) -> dict[str, Any]:
    """Every case for one model; each prune/convert/zeroing in its own subprocess."""
    py = sys.executable
    stem = path.stem
    data_args = _shape_args({n: s for n, s in shapes.items() if feeds is None})
    if feeds is not None:  # shapes from the data
        npz = tmp / f"{stem}_inputs.npz"
        np.savez(npz, **_feeds(feeds))
        data_args = ["--inputs", str(npz)]
    rec: dict[str, Any] = {
        "model": path.name,
        "shapes": {n: list(s) for n, s in shapes.items()},
        "inputs": "realistic data (--inputs)" if feeds else "--input-shape",
        "cases": {},
    }
    for case in cases:
        source = path
        extra: dict[str, Any] = {}
        if case == "zeroed":
            zeroed = tmp / f"{stem}_z25.onnx"
            z = _run(
                [
                    py,
                    str(ROOT / "tools" / "zero_filters.py"),
                    str(path),
                    str(zeroed),
                    "--ratio",
                    "0.25",
                    *_shape_args(shapes),
                ],
                timeout,
            )
            extra["zeroing"] = z.get("stdout", "").strip().splitlines()[-1:] if z["exit"] == 0 else z["error"]
            if z["exit"] != 0:
                rec["cases"][case] = {
                    "exit": None,
                    "error": f"zero_filters.py failed: {z['error']}",
                    "seconds": z["seconds"],
                    **extra,
                }
                _progress(path.name, case, rec["cases"][case])
                continue
            source = zeroed
        out = tmp / f"{stem}_{case}.onnx"
        report = tmp / f"{stem}_{case}.json"
        if case == "convert":
            # convert takes shapes only (Silero: input and state; sr is a static scalar)
            cmd = [
                py,
                "-m",
                "onnxprune",
                "convert",
                str(source),
                "-o",
                str(tmp / f"{stem}.xml"),
                *_shape_args(shapes),
            ]  # not quiet: its check line is recorded
        else:
            crit = (
                ["--criterion", "l2", "--ratio", "0.25"]
                if case == "l2"
                else ["--criterion", "zero", "--compare-openvino"]
            )
            cmd = [
                py,
                "-m",
                "onnxprune",
                "prune",
                str(source),
                "-o",
                str(out),
                "-q",
                "--report",
                str(report),
                *crit,
                *data_args,
            ]
        if report.exists():
            report.unlink()
        r = _run(cmd, timeout)
        if case == "convert":
            r.update(_ir_check(r.get("stdout", "")))
        r.pop("stdout", None)
        if report.exists():
            r.update(_summary(json.loads(report.read_text())))
        r.update(extra)
        if case in ("zero", "zeroed") and r.get("exit") == 0 and out.exists():
            # Both tools' removals by one counter: OpenVINO's, on the two converted models.
            c = _run(
                [py, str(Path(__file__).resolve()), "--ov-count", str(source), str(out), json.dumps(shapes)], timeout
            )
            r["ov_counter"] = json.loads(c["stdout"]) if c["exit"] == 0 else {"error": c["error"]}
        rec["cases"][case] = r
        _progress(path.name, case, r)
        for f in (out, report, tmp / f"{stem}.xml", tmp / f"{stem}.bin"):
            if f.exists():
                f.unlink()
    return rec


def ov_count(original: str, pruned: str, shapes_json: str) -> dict[str, Any]:
    """Channels and MACs of both models by OpenVINO's counter (openvino_pass.layer_stats), each
    converted and reshaped to the same static shapes."""
    import openvino as ov

    from onnxprune.openvino_pass import layer_stats, static_inputs

    shapes = json.loads(shapes_json)
    stats = []
    for path in (original, pruned):
        m = ov.convert_model(path)
        static_inputs(m, shapes=shapes)
        stats.append(layer_stats(m))
    b, a = stats
    return {
        "channels_total": b["channels_total"],
        "channels_removed": b["channels_total"] - a["channels_total"],
        "macs_before": b["macs"],
        "macs_after": a["macs"],
    }


def _progress(model: str, case: str, r: dict[str, Any]) -> None:
    print(
        f"{model:45s} {case:8s} exit={r.get('exit')} ch={r.get('channels_removed')}/{r.get('channels_total')} "
        f"ov={(r.get('openvino') or {}).get('channels_removed')} ok={r.get('verified')} {r.get('seconds')}s "
        f"{r.get('error') or ''}",
        flush=True,
    )


def _ir_check(stdout: str) -> dict[str, Any]:
    """convert's check line: the IR's worst difference and, for a dynamically quantized model
    judged within onnxruntime's own noise, the elements past the tolerance, the noise floor and
    the margin."""
    line = next((x for x in stdout.splitlines() if x.startswith("check against onnxruntime:")), "")
    if not line:
        return {}
    out: dict[str, Any] = {"ir_check": line.split(": ", 1)[1][:600]}
    m = re.search(r"max abs diff (\S+)", line)
    out["ir_max_abs_diff"] = float(m.group(1)) if m else None
    m = re.search(
        r"on (\d+) of (\d+) elements past .* noise floor (\S+)\), at most \S+ x the (\d+) elements.*margin (\S+)", line
    )
    if m:
        past, total, floor, noise_past, margin = m.groups()
        out["ir_noise"] = {
            "elements_past": int(past),
            "elements": int(total),
            "noise_floor": float(floor),
            "noise_elements_past": int(noise_past),
            "margin": float(margin),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="/work/corpus")
    ap.add_argument("--nncf", default="/work/nncf_exports")
    ap.add_argument("--only", default=None, help="run only models whose file name contains this")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "real_exports"))
    ap.add_argument(
        "--render", action="store_true", help="only write the Markdown from the JSON (e.g. of an unfinished run)"
    )
    ap.add_argument("--summary", action="store_true", help="print the README summary table from the JSON")
    ap.add_argument("--ov-count", nargs=3, metavar=("ORIGINAL", "PRUNED", "SHAPES_JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ov_count:
        print(json.dumps(ov_count(*args.ov_count)))
        return 0
    out_json, out_md = Path(args.out + ".json"), Path(args.out + ".md")
    if args.summary:
        saved = json.loads(out_json.read_text())
        print(summary(saved["results"], saved["meta"]))
        return 0
    if args.render:
        saved = json.loads(out_json.read_text())
        write_md(out_md, saved["results"], saved["meta"], CORPUS)
        return 0
    cases = tuple(c for c in args.cases.split(",") if c)
    models: list[tuple[Path, dict, str | None, int]] = [
        (Path(args.corpus) / f, s, feeds, t) for f, (s, feeds, t) in CORPUS.items()
    ]
    models += [(Path(args.nncf) / f"{n}_{f}.onnx", {}, None, 300) for n in NNCF_NETS for f in NNCF_FORMS]
    if args.only:
        models = [m for m in models if args.only in m[0].name]
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=False
    ).stdout.strip()
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit[:60],
        "machine": f"{os.cpu_count()} cores, shared",
    }
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_real_") as d:
        for path, shapes, feeds, timeout in models:
            if not path.exists():
                results.append(
                    {"model": path.name, "inputs": "", "cases": {"-": {"exit": None, "error": "file missing"}}}
                )
                continue
            results.append(bench_model(path, shapes, feeds, timeout, cases, Path(d)))
            meta["finished"] = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M UTC")
            meta["complete"] = False
            out_json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    meta["complete"] = True
    out_json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    write_md(out_md, results, meta, CORPUS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
