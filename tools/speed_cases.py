"""Models, cases and targets of the speed benchmark, shared by its phases (tools/bench_speed.py)
and its report (tools/speed_report.py)."""

from __future__ import annotations

import json
import os
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MODELS = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "densenet121",
    "shufflenet_v2_x1_0",
    "squeezenet1_1",
    "googlenet",
    "mnasnet1_0",
    "regnet_y_400mf",
    "resnext50_32x4d",
    "vgg11_bn",
    "inception_v3",
]
L2_CASES = {"l2": 1, "l2_r8": 8, "l2_r16": 16}
CASES = ["zero", "ov_pass", *L2_CASES]
CASE_TITLES = {
    "zero": 'zero removal: onnxprune.prune(path, "zero")',
    "ov_pass": "OpenVINO pruning pass (apply_pruning_transformation)",
    "l2": 'L2 25% per layer: prune(path, "l2", ratio=0.25, verify=True)',
    "l2_r8": "L2 25% per layer, round_to=8",
    "l2_r16": "L2 25% per layer, round_to=16",
}

# Targets of the issue "The OpenVINO hand-off".
TARGETS = [
    {
        "name": "ResNet-50, zero removal (25% zeroed filters, NNCF clusters)",
        "model": "resnet50",
        "cases": ["zero"],
        "tolerance": 0.10,
    },
    {
        "name": "MobileNetV2, L2 25% with rounding",
        "model": "mobilenet_v2",
        "cases": ["l2_r8", "l2_r16"],
        "tolerance": 0.20,
    },
]
OV_REFERENCE_MBV2 = {"macs_ratio": 0.58, "latency_ratio": 0.77}


def _dump(path: str, data: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)


def _load(path: str) -> dict:
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return {}
