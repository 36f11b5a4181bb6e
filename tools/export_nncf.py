#!/usr/bin/env python3
"""Make real NNCF exports: filter pruning (with and without int8 quantization) on small digits CNNs.

Three nets are trained on scikit-learn's bundled handwritten digits (8x8, no download), with the
split and normalisation of tools/train_digits.py:

* ``digits``    — the digits CNN of tools/train_digits.py (residual Add, Concat of two branches);
* ``resnet``    — a small ResNet: BasicBlocks with residual adds, 1x1 stride-2 shortcut convs;
* ``mobilenet`` — a MobileNetV2-style net: inverted residuals (1x1 expand, 3x3 depthwise,
  1x1 project, residual add when the shape allows), ReLU6.

Each net is trained in float, then NNCF 2.19's ``filter_pruning`` (pruning_target 0.4, L2
filter importance, exponential schedule over ``--pruning-steps`` epochs, ``prune_first_conv`` and
``prune_downsample_convs`` on so that the residual clusters are pruned too, NNCF's defaults
otherwise: BatchNorms masked, kept channel counts multiples of 8) is applied, without
and with ``quantization`` (NNCF's default int8 preset, range and BatchNorm initialisation on
training data), and fine-tuned. Exports (opset 14, NNCF's default, batch 1, input ``input``,
output ``logits``) go to OUT (default /work/nncf_exports):

* ``<net>_float.onnx``     — pruning only: ``compression_ctrl.export_model(path)``;
* ``<net>_fq.onnx``        — pruning + quantization, NNCF's default export
  (``compression_ctrl.export_model(path)``): every quantizer one
  ``org.openvinotoolkit:FakeQuantize``, weights as Constant nodes;
* ``<net>_qdq.onnx``       — the same trained model, QDQ form through NNCF's export option
  ``"export_to_onnx_standard_ops": true`` (quantization section; deprecated in 2.19 but
  working): QuantizeLinear -> DequantizeLinear from NNCF's own symbolic, float Constant
  weights. The option only sets the quantizers' export mode when the controller is built,
  so the script sets that mode (``QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS``)
  on the trained quantizers and exports again;
* ``<net>_qdq_strip.onnx`` — the QDQ route NNCF 2.19's deprecation note recommends instead:
  ``nncf.strip`` (the controller's ``strip()``, on a copy) then export. Stripping fills
  the pruned filters and BatchNorm parameters, running statistics included, with zeros and
  swaps the quantizers for torch's native FakeQuantize modules, which torch exports as
  QuantizeLinear -> DequantizeLinear with the weights as float initializers.

In float, fq and qdq the pruning masks are applied by NNCF's mask operations while tracing:
weights and BatchNorm scale/bias masked, running statistics not; BatchNorms after masked
convs stay unfolded.

plus ``digits_test.npz`` (held-out images under the models' input name ``input``, and
``labels``) and ``accuracy.json`` (top-1 on those images, measured in torch, for the float
net, each compressed net, and each exported ONNX file with onnxruntime where it loads it).

Runs in its own venv, never the package's (torch and nncf are tools-only):

    python3 -m venv /work/nncf-venv
    /work/nncf-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 nncf==2.19.0 \\
        scikit-learn onnx onnxruntime
    NNCF_TORCH_LEGACY_TRACING=1 NNCF_EXTENSION_LOAD_TIMEOUT=0 \\
        /work/nncf-venv/bin/python tools/export_nncf.py [--out DIR] [--nets digits,resnet,mobilenet] [--fixtures]

``--fixtures`` then copies the ResNet's float, fq and qdq files and the MobileNetV2's fq file to
``fixtures/nncf_<net>_<form>.onnx`` (tests/test_nncf_exports.py). The held-out set is the one
of ``fixtures/digits_test.npz`` (same split, same normalisation).

NNCF's quantization compiles a C++ extension on first use (minutes on 2 cores; the
environment variables above are set by the script when missing). Seeded; torch runs
single-threaded with deterministic algorithms, so a re-run gives the same files.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# read by nncf, which is imported lazily inside the functions below
os.environ.setdefault("NNCF_TORCH_LEGACY_TRACING", "1")
os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_digits import DigitsNet

SEED = 0
INPUT, OUTPUT = "input", "logits"
PRUNING_TARGET = 0.4
FORMS = ("float", "fq", "qdq", "qdq_strip")
# copied to fixtures/nncf_<name>.onnx by --fixtures (tests/test_nncf_exports.py): the ResNet in
# three forms, and the MobileNetV2 FakeQuantize form for its per-channel activation
# FakeQuantize before the depthwise convs
FIXTURES = ("resnet_float", "resnet_fq", "resnet_qdq", "mobilenet_fq")
ROOT = Path(__file__).resolve().parent.parent


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 conv shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """stem 24 -> 2 blocks of 24 (identity shortcuts) -> block 48 (stride 2, 1x1 conv shortcut) -> GAP -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU())
        self.layers = nn.Sequential(BasicBlock(24, 24, 1), BasicBlock(24, 24, 1), BasicBlock(24, 48, 2))
        self.head = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection, residual when possible."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res else y


class SmallMobileNetV2(nn.Module):
    """stem 24 -> IR blocks (24, 24, 32/s2, 32, 48/s2; expansion 1 then 4) -> 1x1 conv 64 -> GAP -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(24, 24, 1, 1),
            InvertedResidual(24, 24, 1, 4),
            InvertedResidual(24, 32, 2, 4),
            InvertedResidual(32, 32, 1, 4),
            InvertedResidual(32, 48, 2, 4),
        )
        self.last = nn.Sequential(nn.Conv2d(48, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6())
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.last(self.blocks(self.stem(x)))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


NETS: dict[str, Callable[[], nn.Module]] = {"digits": DigitsNet, "resnet": SmallResNet, "mobilenet": SmallMobileNetV2}


def seed_all(seed: int = SEED) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The split and normalisation of tools/train_digits.py: [N, 1, 8, 8] float32, int64 labels."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    x = (x - 0.3) / 0.4
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)


def loader(x: np.ndarray, y: np.ndarray, shuffle: bool, seed: int = SEED) -> torch.utils.data.DataLoader:
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    gen = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=64, shuffle=shuffle, generator=gen)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def train(model: nn.Module, data: torch.utils.data.DataLoader, epochs: int, lr: float, ctrl: Any = None) -> None:
    """Adam with a cosine schedule; with an NNCF controller, its loss and scheduler steps too."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    for _ in range(epochs):
        if ctrl is not None:
            ctrl.scheduler.epoch_step()
        model.train()
        for xb, yb in data:
            if ctrl is not None:
                ctrl.scheduler.step()
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            if ctrl is not None:
                loss = loss + ctrl.loss()
            loss.backward()
            opt.step()
        sched.step()


def nncf_config(quantize: bool, pruning_steps: int, log_dir: Path) -> Any:
    from nncf import NNCFConfig

    algos: list[dict[str, Any]] = [
        {
            "algorithm": "filter_pruning",
            "pruning_init": 0.1,
            "params": {
                "schedule": "exponential",
                "pruning_target": PRUNING_TARGET,
                "pruning_steps": pruning_steps,
                # with NNCF's defaults (False) the residual clusters of these small nets, which
                # contain the stem or a stride-2 conv, would not be pruned at all
                "prune_first_conv": True,
                "prune_downsample_convs": True,
            },
        }
    ]
    if quantize:
        quant: dict[str, Any] = {
            "algorithm": "quantization",
            "initializer": {
                "range": {"num_init_samples": 256},
                "batchnorm_adaptation": {"num_bn_adaptation_samples": 256},
            },
        }
        algos.append(quant)
    # log_dir: NNCF writes its graph dumps (original_graph.dot, compressed_graph.dot) there
    return NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": algos, "log_dir": str(log_dir)}
    )


def compress(
    net: nn.Module,
    quantize: bool,
    train_data: torch.utils.data.DataLoader,
    epochs: int,
    pruning_steps: int,
    log_dir: Path,
) -> tuple[Any, nn.Module]:
    """NNCF filter pruning (+ quantization) on a copy of ``net``, fine-tuned ``epochs`` epochs."""
    from nncf.torch import create_compressed_model, register_default_init_args

    seed_all()
    config = register_default_init_args(nncf_config(quantize, pruning_steps, log_dir), train_data)
    ctrl, model = create_compressed_model(copy.deepcopy(net), config)
    train(model, train_data, epochs, lr=1e-3, ctrl=ctrl)
    model.eval()
    return ctrl, model


def child(ctrl: Any, kind: str) -> Any:
    """The pruning or quantization controller inside NNCF's composite controller."""
    from nncf.torch.pruning.filter_pruning.algo import FilterPruningController
    from nncf.torch.quantization.algo import QuantizationController

    cls = FilterPruningController if kind == "pruning" else QuantizationController
    ctrls = getattr(ctrl, "child_ctrls", [ctrl])
    return next(c for c in ctrls if isinstance(c, cls))


def export_quantized(ctrl: Any, out: Path, name: str) -> None:
    """The pruning + quantization model in its three int8 forms (see the module docstring)."""
    from nncf.torch.exporter import PTExporter
    from nncf.torch.quantization.layers import QuantizerExportMode

    # nncf.strip on a copy first: it rewrites the model it is given
    PTExporter(ctrl.strip(do_copy=True), [INPUT], [OUTPUT]).export_model(str(out / f"{name}_qdq_strip.onnx"))
    ctrl.export_model(str(out / f"{name}_fq.onnx"), input_names=[INPUT], output_names=[OUTPUT])
    # what "export_to_onnx_standard_ops": true does when the controller is built
    for q in child(ctrl, "quantization").all_quantizations.values():
        q.set_export_mode(QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)
    ctrl.export_model(str(out / f"{name}_qdq.onnx"), input_names=[INPUT], output_names=[OUTPUT])


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float | None:
    """Top-1 of an exported file with onnxruntime, one image at a time (the export has batch 1)."""
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:
        return None
    pred = [int(sess.run(None, {INPUT: x[i : i + 1]})[0].argmax()) for i in range(len(x))]
    return float((np.asarray(pred) == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/work/nncf_exports")
    parser.add_argument("--nets", default=",".join(NETS))
    parser.add_argument("--epochs", type=int, default=30, help="float training epochs")
    parser.add_argument("--finetune", type=int, default=8, help="fine-tuning epochs under NNCF")
    parser.add_argument("--pruning-steps", type=int, default=4, help="epochs to reach the pruning target")
    parser.add_argument(
        "--fixtures", action="store_true", help="then copy " + ", ".join(FIXTURES) + " to fixtures/nncf_*.onnx"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "nncf_logs"
    logs.mkdir(exist_ok=True)
    x_train, x_test, y_train, y_test = load_data()
    np.savez(out / "digits_test.npz", **{INPUT: x_test, "labels": y_test})
    acc_path = out / "accuracy.json"
    accs: dict[str, Any] = json.loads(acc_path.read_text()) if acc_path.exists() else {}
    for name in args.nets.split(","):
        t0 = time.time()
        seed_all()
        net = NETS[name]()
        train(net, loader(x_train, y_train, True), args.epochs, lr=3e-3)
        rec: dict[str, Any] = {"torch_float": accuracy(net, x_test, y_test)}

        ctrl, model = compress(net, False, loader(x_train, y_train, True), args.finetune, args.pruning_steps, logs)
        rec["torch_pruned"] = accuracy(model, x_test, y_test)
        rec["pruning_level"] = float(child(ctrl, "pruning").pruning_level)
        ctrl.export_model(str(out / f"{name}_float.onnx"), input_names=[INPUT], output_names=[OUTPUT])

        ctrl, model = compress(net, True, loader(x_train, y_train, True), args.finetune, args.pruning_steps, logs)
        rec["torch_pruned_int8"] = accuracy(model, x_test, y_test)
        rec["pruning_level_int8"] = float(child(ctrl, "pruning").pruning_level)
        export_quantized(ctrl, out, name)
        for form in FORMS:
            rec[f"onnxruntime_{form}"] = onnx_accuracy(out / f"{name}_{form}.onnx", x_test, y_test)
        rec["seconds"] = round(time.time() - t0, 1)
        accs[name] = rec
        acc_path.write_text(json.dumps(accs, indent=1, sort_keys=True) + "\n")
        print(name, json.dumps(rec), flush=True)
    if args.fixtures:
        for name in FIXTURES:
            shutil.copyfile(out / f"{name}.onnx", ROOT / "fixtures" / f"nncf_{name}.onnx")


if __name__ == "__main__":
    main()
