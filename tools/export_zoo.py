#!/usr/bin/env python3
"""Export a zoo of torchvision models with NNCF-style zeroed conv filters to ONNX.

For every architecture the script

1. builds the model with random init (``weights=None``) under ``torch.manual_seed``;
2. calibrates BatchNorm running statistics with one seeded random batch (train-mode
   forward pass, cumulative average) so activations stay well scaled, then perturbs
   running mean/var and randomises gamma/beta so no BN is an identity;
3. zeroes 25% (rounded down) of the output filters of every prunable ``nn.Conv2d``,
   choosing the filters with the lowest L2 norm, the way NNCF filter pruning does:
   ``weight[f] = 0``, ``bias[f] = 0`` and, when the conv feeds a BatchNorm2d directly,
   ``gamma[f] = beta[f] = 0`` of that BN;
4. exports two ONNX files (opset 17, legacy TorchScript exporter, input ``input`` with
   dynamic batch axis 0, output ``output``):
   ``<name>.onnx`` keeps BatchNormalization nodes (``training=TrainingMode.PRESERVE``
   on an eval-mode model: BN is exported with ``training_mode=0``, i.e. inference
   semantics, and the eval-mode Conv+BN fusion peephole is skipped) and
   ``<name>_bnfold.onnx`` has the Conv-BN pairs folded with
   ``torch.nn.utils.fusion.fuse_conv_bn_eval`` before a default (EVAL) export;
5. checks both files with onnxruntime against the PyTorch output (batch 2, which also
   exercises the dynamic batch axis) and writes ``manifest.json``.

Which convs are prunable:

* ``groups == 1``: 25% of all filters.
* ``1 < groups``: 25% of the filters *of each group*, rounded down per group
  (``--grouped per-group``, default), so every group loses the same number of filters
  and the conv stays a valid grouped conv after removal.  Depthwise convs
  (one filter per group) therefore get nothing zeroed.  ``--grouped skip`` leaves
  all grouped convs untouched instead.
* Convs whose output is the model's prediction (SqueezeNet's conv classifier, the
  segmentation heads' final classifiers) are skipped, like the final Linear
  classifiers of the other models (Linear layers are never touched).

Conv-BN pairs are found with forward hooks: a BN is paired with a conv when the BN's
input tensor *is* the conv's output tensor (and no other hooked module consumes it).

Zeroing modes (``--zeroing``):

* ``independent`` (default, writes ``/work/zoo``): step 3 above, every conv on its own.
* ``nncf`` (writes ``/work/zoo-nncf``): the models are exported *clean* (same seeds and
  BN randomisation, nothing zeroed in PyTorch) and ``tools/zero_filters.py`` then zeroes
  the ONNX files the way NNCF's filter pruning does: convs whose output channels are tied
  (Add/Mul/Concat...) form clusters that lose the same filter indices (lowest summed L2
  over the cluster), and the channel is masked everywhere it flows (depthwise conv
  filters and every BN that carries it).  ``<name>_bnfold.onnx`` is zeroed *after*
  folding (conv weights + bias; no BN left).  Sources whose channels reach a graph
  output (prediction convs) are skipped.  ``filters_zeroed`` in the manifest is
  per file (the ranking differs slightly once BN is folded into the weights).

torch is used only here, never by the onnxprune package.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from zoo_zeroing import (
    PRUNE_RATIO,
    SEED,
    _seed_all,
    calibrate_and_randomise_bn,
    find_conv_bn_pairs,
    fold_bn,
    zero_filters,
)

OPSET = 17


class _SegOut(nn.Module):
    """Wrap a torchvision segmentation model and return only ``out``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


@dataclass(frozen=True)
class ZooEntry:
    """How to build one zoo model."""

    build: Callable[[], nn.Module]
    input_hw: tuple[int, int] = (224, 224)
    skip_convs: tuple[str, ...] = ()  # module names (as in the built nn.Module)
    task: str = "classification"


def _tv(name: str, **kw: Any) -> Callable[[], nn.Module]:
    return lambda: getattr(torchvision.models, name)(weights=None, **kw)


def _seg(name: str) -> Callable[[], nn.Module]:
    return lambda: _SegOut(getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None))


ZOO: dict[str, ZooEntry] = {
    "resnet18": ZooEntry(_tv("resnet18")),
    "resnet50": ZooEntry(_tv("resnet50")),
    "resnext50_32x4d": ZooEntry(_tv("resnext50_32x4d")),
    "wide_resnet50_2": ZooEntry(_tv("wide_resnet50_2")),
    "mobilenet_v2": ZooEntry(_tv("mobilenet_v2")),
    "mobilenet_v3_large": ZooEntry(_tv("mobilenet_v3_large")),
    "efficientnet_b0": ZooEntry(_tv("efficientnet_b0")),
    "densenet121": ZooEntry(_tv("densenet121")),
    "shufflenet_v2_x1_0": ZooEntry(_tv("shufflenet_v2_x1_0")),
    "squeezenet1_1": ZooEntry(_tv("squeezenet1_1"), skip_convs=("classifier.1",)),
    "googlenet": ZooEntry(_tv("googlenet", aux_logits=False, init_weights=True)),
    "inception_v3": ZooEntry(_tv("inception_v3", aux_logits=False, init_weights=True), input_hw=(299, 299)),
    "mnasnet1_0": ZooEntry(_tv("mnasnet1_0")),
    "regnet_y_400mf": ZooEntry(_tv("regnet_y_400mf")),
    "convnext_tiny": ZooEntry(_tv("convnext_tiny")),
    "vgg11_bn": ZooEntry(_tv("vgg11_bn")),
    "lraspp_mobilenet_v3_large": ZooEntry(
        _seg("lraspp_mobilenet_v3_large"),
        skip_convs=("model.classifier.low_classifier", "model.classifier.high_classifier"),
        task="segmentation",
    ),
    # deeplabv3_mobilenet_v3_large (~11M params) is much smaller than deeplabv3_resnet50.
    "deeplabv3_mobilenet_v3_large": ZooEntry(
        _seg("deeplabv3_mobilenet_v3_large"),
        skip_convs=("model.classifier.4",),
        task="segmentation",
    ),
}


def export_onnx(model: nn.Module, x: torch.Tensor, path: str, keep_bn: bool) -> None:
    """Legacy TorchScript export, opset 17, dynamic batch."""
    training = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            path,
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            training=training,
            do_constant_folding=True,
        )


def onnx_summary(path: str) -> dict[str, Any]:
    """Op histogram, zero-filter count and a few facts about an exported file."""
    m = onnx.load(path)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    ident = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity"}

    def weight(name: str) -> np.ndarray | None:
        while name in ident:
            name = ident[name]
        t = inits.get(name)
        return None if t is None else onnx.numpy_helper.to_array(t)

    ops = collections.Counter(n.op_type for n in g.node)
    zero_filters_ = conv_nodes_with_zero = 0
    conv_weight_via_identity = 0
    for n in g.node:
        if n.op_type != "Conv":
            continue
        if n.input[1] in ident:
            conv_weight_via_identity += 1
        w = weight(n.input[1])
        if w is None:
            continue
        z = int((np.abs(w.reshape(w.shape[0], -1)).max(axis=1) == 0).sum())
        zero_filters_ += z
        conv_nodes_with_zero += z > 0
    return {
        "ops": dict(sorted(ops.items())),
        "num_nodes": len(g.node),
        "num_initializers": len(g.initializer),
        "identity_on_initializer": sum(1 for v in ident.values() if v in inits),
        "conv_weight_via_identity": conv_weight_via_identity,
        "zero_filters_in_onnx": zero_filters_,
        "conv_nodes_with_zero_filters": conv_nodes_with_zero,
        "opset": [(o.domain, o.version) for o in m.opset_import],
        "size_bytes": os.path.getsize(path),
    }


def ort_check(path: str, model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """Run the ONNX file in onnxruntime and compare with PyTorch."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).numpy()
    diff = float(np.abs(got - ref).max())
    scale = float(np.abs(ref).max()) or 1.0
    return {
        "output_shape": list(got.shape),
        "max_abs_diff_vs_torch": diff,
        "scale": scale,
        "ok": bool(np.isfinite(got).all() and diff <= 1e-4 * scale),
    }


def ort_finite(path: str, x: torch.Tensor) -> dict[str, Any]:
    """Run a (zeroed) ONNX file in onnxruntime: output shape and finiteness only."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    return {
        "output_shape": list(got.shape),
        "finite": bool(np.isfinite(got).all()),
        "max_abs_output": float(np.abs(got).max()),
    }


def zero_onnx_nncf(path: str, ratio: float = PRUNE_RATIO) -> dict[str, Any]:
    """Zero the ONNX file at ``path`` in place with tools/zero_filters.py (NNCF clusters)."""
    from zero_filters import zero_filters as zero_filters_onnx

    t0 = time.perf_counter()
    m, count, considered = zero_filters_onnx(onnx.load(path), ratio=ratio, skip_gemm=True)
    onnx.save(m, path)
    onnx.checker.check_model(path)
    return {
        "filters_zeroed": count,
        "filters_considered": considered,
        "zero_seconds": round(time.perf_counter() - t0, 2),
    }


def export_model(
    name: str,
    out_dir: str,
    variants: tuple[str, ...],
    grouped: str = "per-group",
    zeroing: str = "independent",
) -> dict[str, Any]:
    """Build, zero, export and check one zoo model; return its manifest entry."""
    entry = ZOO[name]
    t0 = time.perf_counter()
    _seed_all()
    model = entry.build().eval()
    shape = (1, 3, *entry.input_hw)
    calibrate_and_randomise_bn(model, shape)
    pairs = find_conv_bn_pairs(model, shape)
    nncf = zeroing == "nncf"
    # nncf: export clean (ratio 0 only collects the conv statistics), zero the ONNX afterwards;
    # none: export clean and leave it so (for post-training pruning benchmarks)
    stats = zero_filters(
        model, pairs, entry.skip_convs, ratio=0.0 if zeroing in ("nncf", "none") else PRUNE_RATIO, grouped=grouped
    )
    x = torch.randn(1, *shape[1:], generator=torch.Generator().manual_seed(SEED + 2))
    x_check = torch.randn(2, *shape[1:], generator=torch.Generator().manual_seed(SEED + 3))
    info: dict[str, Any] = {
        "task": entry.task,
        "input_name": "input",
        "input_shape": ["batch", *shape[1:]],
        "export_input_shape": list(shape),
        "params": sum(p.numel() for p in model.parameters()),
        "prune_ratio": PRUNE_RATIO,
        "zeroing": zeroing,
        "grouped_policy": "nncf clusters (tools/zero_filters.py)" if nncf else grouped,
        "skipped_convs": ["sources whose channels reach a graph output"] if nncf else list(entry.skip_convs),
        "num_convs": stats.num_convs,
        "num_convs_zeroed": stats.num_convs_zeroed,
        "num_grouped_convs": stats.num_grouped_convs,
        "num_depthwise_convs": stats.num_depthwise_convs,
        "filters_total": stats.filters_total,
        "filters_zeroed": stats.filters_zeroed,
        "num_batchnorm": stats.num_bn,
        "num_conv_bn_pairs": stats.num_conv_bn_pairs,
        "files": {},
    }
    for variant in variants:
        if variant == "bn":
            fname, m, keep = f"{name}.onnx", model, True
        else:
            fname, m, keep = f"{name}_bnfold.onnx", fold_bn(model, pairs), False
        path = os.path.join(out_dir, fname)
        t1 = time.perf_counter()
        export_onnx(m, x, path, keep_bn=keep)
        onnx.checker.check_model(path)
        rec = {"file": fname, "export_seconds": round(time.perf_counter() - t1, 2)}
        rec["ort"] = ort_check(path, m, x_check)  # clean export vs torch in nncf mode
        if nncf:
            rec.update(zero_onnx_nncf(path))
            rec["ort_zeroed"] = ort_finite(path, x_check)
        rec.update(onnx_summary(path))
        info["files"][variant] = rec
    if nncf:
        counts = [r["filters_zeroed"] for r in info["files"].values()]
        info["filters_zeroed"] = counts[0] if counts else 0
        info["num_convs_zeroed"] = max((r["conv_nodes_with_zero_filters"] for r in info["files"].values()), default=0)
    info["total_seconds"] = round(time.perf_counter() - t0, 2)
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--out", default=None, help="output directory (default /work/zoo, or /work/zoo-nncf with --zeroing nncf)"
    )
    ap.add_argument(
        "--zeroing",
        choices=("independent", "nncf", "none"),
        default="independent",
        help="independent: 25%% of each conv's filters in PyTorch; nncf: clean export, "
        "then tools/zero_filters.py clusters on the ONNX; none: clean export (/work/zoo-clean)",
    )
    ap.add_argument("--models", default="all", help="comma-separated names or 'all': " + ",".join(ZOO))
    ap.add_argument(
        "--bn-fold", dest="bn_fold", action="store_true", default=None, help="only the *_bnfold.onnx variant"
    )
    ap.add_argument("--no-bn-fold", dest="bn_fold", action="store_false", help="only the BN-preserving variant")
    ap.add_argument(
        "--grouped", choices=("per-group", "skip"), default="per-group", help="policy for grouped (non-depthwise) convs"
    )
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.out is None:
        args.out = {"nncf": "/work/zoo-nncf", "none": "/work/zoo-clean"}.get(args.zeroing, "/work/zoo")
    names = list(ZOO) if args.models == "all" else [s.strip() for s in args.models.split(",") if s.strip()]
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        ap.error(f"unknown models: {unknown}")
    variants = {None: ("bn", "bnfold"), True: ("bnfold",), False: ("bn",)}[args.bn_fold]
    os.makedirs(args.out, exist_ok=True)
    mpath = os.path.join(args.out, "manifest.json")
    manifest: dict[str, Any] = {}
    if os.path.exists(mpath):
        with open(mpath) as f:
            manifest = json.load(f)
    manifest.setdefault("meta", {}).update(
        {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "opset": OPSET,
            "seed": SEED,
            "exporter": "torch.onnx legacy TorchScript (dynamo=False)",
            "zeroing": args.zeroing,
        }
    )
    models = manifest.setdefault("models", {})
    failed = 0
    for name in names:
        print(f"[export] {name} ...", flush=True)
        try:
            info = export_model(name, args.out, variants, args.grouped, args.zeroing)
            old = models.get(name, {}).get("files", {})
            info["files"] = {**old, **info["files"]}
            models[name] = info
            for _v, rec in info["files"].items():
                extra = ""
                if "ort_zeroed" in rec:
                    extra = (
                        f" nncf-zeroed {rec['filters_zeroed']}/{rec['filters_considered']}"
                        f" finite={rec['ort_zeroed']['finite']}"
                    )
                print(
                    f"  {rec['file']}: ort ok={rec['ort']['ok']} diff={rec['ort']['max_abs_diff_vs_torch']:.2e}"
                    f" zero filters in onnx={rec['zero_filters_in_onnx']}{extra} ops={rec['ops']}",
                    flush=True,
                )
            print(
                f"  zeroed {info['filters_zeroed']}/{info['filters_total']} filters in "
                f"{info['num_convs_zeroed']}/{info['num_convs']} convs, {info['total_seconds']}s",
                flush=True,
            )
        except Exception as e:  # keep going with the other models
            failed += 1
            models[name] = {"error": f"{type(e).__name__}: {e}"}
            print(f"  FAILED: {type(e).__name__}: {e}", flush=True)
        with open(mpath, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=False)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
