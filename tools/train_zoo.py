#!/usr/bin/env python3
"""Train torchvision classifiers from scratch on an offline glyph task and export them to ONNX as
tools/export_zoo.py exports the zoo (opset 17, legacy TorchScript exporter, input ``input``
[batch, 3, 224, 224] with a dynamic batch axis, output ``output``, BatchNormalization kept), so the
latency benchmark treats them like the zoo but their answers can be checked against labels.

The task (tools/glyph_task.py): one of 32 glyphs on a photo crop, random font, size, rotation,
shear, position, clutter, blur and noise. No pretrained weights can be downloaded here, and the
random-weight zoo's outputs barely depend on the input, so no pruning plan's fidelity could be
told from another's on it.

Training is CPU-bounded on purpose (a shared 2-core machine): AdamW, one cosine schedule over a
resolution schedule (most steps at 96 px on a fixed pre-rendered set, then fresh images at 160
and 224 px, so the exported model is trained at the resolution it is evaluated at), batch 32,
label smoothing 0.1. ResNet-50 has its own recipe (RECIPES: lower learning rate, zero-initialised
residual branches, no weight decay on BN and biases, bf16 autocast, cheap 64 px steps before the
96 px ones, BN statistics recomputed on fresh 224 px images at the end); MobileNetV2's and
EfficientNet-B0's are the recorded ones. The manifest records the task, classes, recipe, steps per
resolution, seed, wall and CPU time, and the top-1 accuracy at 224 px on training images and on
held-out ones (for ResNet-50 also before the BN recalibration).

Runs only in /work/zoo-venv (torch is never a dependency of onnxprune or its tests):

    nice -n 5 /work/zoo-venv/bin/python tools/train_zoo.py --models mobilenet_v2 [--out /work/zoo-trained]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from export_zoo import OPSET, export_onnx, onnx_summary, ort_check
from glyph_task import CLASSES, TRAIN_SEEDS_FROM, glyph_images, glyph_pixels

SEED = 0
TEST_SEED = 3  # held-out seed of the manifest's test accuracy (the benchmark: 1 calibration, 2 evaluation)
BN_SEED = TRAIN_SEEDS_FROM + 100  # training-side images for BN recalibration (phases use + their index)
EVAL_N = 512
# (resolution, steps) per model: most steps where a step is cheap, the last at the exported 224
SCHEDULES: dict[str, tuple[tuple[int, int], ...]] = {
    "mobilenet_v2": ((96, 1400), (160, 200), (224, 80)),
    "efficientnet_b0": ((96, 1400), (160, 200), (224, 60)),
    # the recipe below: cheap 64 px steps first (progressive resizing), most at 96 px on the same
    # pre-rendered images, then fresh 160 and 224 px images
    "resnet50": ((64, 600), (96, 1000), (160, 200), (224, 80)),
}
# The optimiser and its schedule: MobileNetV2's and EfficientNet-B0's (the recorded ones) are the
# defaults. ResNet-50 with them stayed at chance (0.045 batch top-1 after 700 steps at 96 px:
# AdamW 2e-3, weight decay on every parameter, residual branches at full scale); in 400-step
# probes at 64 px (bf16) lr 1e-3, zero-initialised last BN of every residual branch (each block
# starts as the identity) and no decay on BN and biases reached 0.19 batch top-1 where SGD
# (nesterov, lr 0.02) was still at 0.07.
RECIPE: dict[str, Any] = {
    "lr": 2e-3,
    "weight_decay": 0.05,
    "decay_norm_and_bias": True,  # weight decay on BN weights and biases too
    "warmup": None,  # linear warm-up steps (None: a twentieth of the steps)
    "zero_init_residual": False,
    "bulk_phases": 1,  # leading phases on the pre-rendered set (the same images at their size)
    "bn_recalibrate": 0,  # fresh 224 px images to recompute BN statistics on after training
    "bf16": None,  # None: --bf16 decides
}
RECIPES: dict[str, dict[str, Any]] = {
    "mobilenet_v2": {},
    "efficientnet_b0": {},
    "resnet50": {
        "lr": 1e-3,
        "decay_norm_and_bias": False,
        "warmup": 100,
        "zero_init_residual": True,
        "bulk_phases": 2,
        "bn_recalibrate": 512,
        "bf16": True,  # 1.6x fewer CPU seconds per step here (avx512_bf16); the export is float32
    },
}
BATCH = 32
BULK = 24_000  # pre-rendered images of the first (cheapest) resolution, shared by the models
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _normalised(pixels: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW with ImageNet mean/std (glyph_images' convention)."""
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    return ((x - MEAN) / STD).contiguous(memory_format=torch.channels_last)


def bulk_set(cache: Path, size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The pre-rendered training images (uint8 NHWC), cached on disk for the other models."""
    path = cache / f"glyphs_{size}px_{n}_seed{TRAIN_SEEDS_FROM}.npz"
    if path.exists():
        data = np.load(path)
        return data["x"], data["y"]
    t0 = time.perf_counter()
    x, y = glyph_pixels(n, TRAIN_SEEDS_FROM, size)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    print(f"  rendered {n} training images at {size} px in {time.perf_counter() - t0:.0f} s", flush=True)
    return x, y


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 64) -> float:
    """Top-1 accuracy in eval mode (x: normalised float NCHW)."""
    model.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(x[i : i + batch]).contiguous(memory_format=torch.channels_last)
            right += int((model(xb).argmax(1).numpy() == y[i : i + batch]).sum())
    return right / len(x)


def recipe_of(name: str, bf16: bool = False) -> dict[str, Any]:
    """``name``'s recipe: RECIPE with its RECIPES entry over it (``bf16``: the --bf16 flag, where the
    recipe leaves it open)."""
    r = {**RECIPE, **RECIPES.get(name, {})}
    if r["bf16"] is None:
        r["bf16"] = bf16
    return r


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict[str, Any]]:
    """AdamW's parameter groups: weight decay on conv and linear weights, and on the 1-d
    parameters (BN weights and biases, biases) only if ``decay_norm_and_bias``."""
    if decay_norm_and_bias:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    params = list(model.parameters())
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def new_model(name: str, zero_init_residual: bool = False) -> nn.Module:
    """torchvision's ``name`` with random weights and the task's classes."""
    extra = {"zero_init_residual": True} if zero_init_residual else {}
    return getattr(torchvision.models, name)(weights=None, num_classes=len(CLASSES), **extra)


def recalibrate_bn(model: nn.Module, x: np.ndarray, batch: int = 32) -> nn.Module:
    """Recompute every BatchNorm's running mean and variance on ``x`` (normalised float NCHW:
    fresh images at the exported resolution; a cumulative average, no weight changes)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            model(torch.from_numpy(x[i : i + batch]).contiguous(memory_format=torch.channels_last))
    for m in bns:
        m.momentum = 0.1
    return model.eval()


def train(
    name: str, schedule: tuple[tuple[int, int], ...], cache: Path, recipe: dict[str, Any]
) -> tuple[nn.Module, dict]:
    """Train ``name`` from scratch through ``schedule`` with ``recipe``; the model (eval mode)
    and its log."""
    torch.manual_seed(SEED)
    bf16 = recipe["bf16"]
    model = new_model(name, recipe["zero_init_residual"])
    model = model.to(memory_format=torch.channels_last)
    total = sum(s for _, s in schedule)
    opt = torch.optim.AdamW(param_groups(model, recipe["weight_decay"], recipe["decay_norm_and_bias"]), lr=recipe["lr"])
    warm = recipe["warmup"] or max(total // 20, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: (k + 1) / warm if k < warm else 0.5 * (1 + math.cos(math.pi * (k - warm) / (total - warm)))
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    log: dict[str, Any] = {"phases": []}
    step = 0
    for phase, (size, steps) in enumerate(schedule):
        t0 = time.perf_counter()
        if phase < recipe["bulk_phases"]:
            px, labels = bulk_set(cache, size, BULK)
        else:  # fresh images at this resolution (rendered as needed: fewer steps here)
            px, labels = glyph_pixels(steps * BATCH, TRAIN_SEEDS_FROM + phase, size)
        order = np.random.default_rng(SEED + phase).permutation(len(px))
        model.train()
        losses, hits = [], []
        for k in range(steps):
            idx = order[(k * BATCH) % len(order) :][:BATCH]
            if len(idx) < BATCH:
                idx = order[:BATCH]
            xb, yb = _normalised(px[idx]), torch.from_numpy(labels[idx])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(xb)
                loss = loss_fn(out.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
            hits.append(float((out.argmax(1) == yb).float().mean()))
            if (k + 1) % 100 == 0 or k + 1 == steps:
                print(
                    f"  {name} {size}px step {k + 1}/{steps}: loss {np.mean(losses[-100:]):.3f}, "
                    f"batch top-1 {np.mean(hits[-100:]):.3f}, {time.perf_counter() - t0:.0f} s",
                    flush=True,
                )
        log["phases"].append(
            {
                "size": size,
                "steps": steps,
                "seconds": round(time.perf_counter() - t0, 1),
                "last_100_loss": round(float(np.mean(losses[-100:])), 4),
                "last_100_batch_top1": round(float(np.mean(hits[-100:])), 4),
            }
        )
    log["steps"] = step
    return model.eval(), log


def train_model(name: str, out: Path, bf16: bool, schedule: tuple[tuple[int, int], ...]) -> dict[str, Any]:
    """Train, evaluate at 224 px, export and check one model; its manifest entry."""
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    recipe = recipe_of(name, bf16)
    model, log = train(name, schedule, out / "cache", recipe)
    torch.save(model.state_dict(), out / "cache" / f"{name}_trained.pt")  # before the evaluation and export
    xt, yt = glyph_images(EVAL_N, TEST_SEED, 224)
    if recipe["bn_recalibrate"]:
        log["test_top1_224_before_bn_recalibration"] = accuracy(model, xt, yt)
        xr, _ = glyph_images(recipe["bn_recalibrate"], BN_SEED, 224)
        recalibrate_bn(model, xr)
        log["bn_recalibration"] = (
            f"glyph_images({recipe['bn_recalibrate']}, seed={BN_SEED}, size=224), train mode, no grad"
        )
    train_s, train_cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
    xs, ys = glyph_images(EVAL_N, TRAIN_SEEDS_FROM, 224)  # the first bulk images, rendered at 224
    entry: dict[str, Any] = {
        **log,
        "schedule": [list(s) for s in schedule],
        "batch": BATCH,
        "recipe": recipe,
        "bf16_autocast": recipe["bf16"],
        "train_seconds": round(train_s, 1),
        "train_cpu_seconds": round(train_cpu, 1),
        "test_top1_224": accuracy(model, xt, yt),
        "train_top1_224": accuracy(model, xs, ys),
        "test_images": f"glyph_images({EVAL_N}, seed={TEST_SEED}, size=224)",
        "train_images_scored": f"glyph_images({EVAL_N}, seed={TRAIN_SEEDS_FROM}, size=224) (the bulk set's first, at 224 px)",
        "params": sum(p.numel() for p in model.parameters()),
        "input_name": "input",
        "input_shape": ["batch", 3, 224, 224],
    }
    path = out / f"{name}.onnx"
    model = model.to(memory_format=torch.contiguous_format)
    x = torch.from_numpy(glyph_images(1, TEST_SEED + 1, 224)[0])
    export_onnx(model, x, str(path), keep_bn=True)
    entry["file"] = path.name
    entry["ort"] = ort_check(str(path), model, torch.from_numpy(glyph_images(2, TEST_SEED + 2, 224)[0]))
    entry["onnx"] = {k: v for k, v in onnx_summary(str(path)).items() if k in ("ops", "num_nodes", "size_bytes")}
    entry["total_seconds"] = round(time.perf_counter() - wall0, 1)
    return entry


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(SCHEDULES), help="comma-separated: " + ",".join(SCHEDULES))
    ap.add_argument("--out", default="/work/zoo-trained")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast in training (the export is float32)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every schedule's steps (a dry run: 0.05)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [s.strip() for s in args.models.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCHEDULES]
    if unknown:
        ap.error(f"unknown models: {unknown}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {}
    manifest["meta"] = {
        "task": "glyph classification: tools/glyph_task.py (32 classes, 224x224, ImageNet mean/std inputs)",
        "classes": "".join(CLASSES),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "opset": OPSET,
        "exporter": "torch.onnx legacy TorchScript (dynamo=False), BatchNormalization kept",
        "seed": SEED,
        "train_seeds_from": TRAIN_SEEDS_FROM,
        "threads": args.threads,
    }
    models = manifest.setdefault("models", {})
    for name in names:
        schedule = tuple((r, max(1, round(s * args.scale))) for r, s in SCHEDULES[name])
        print(f"[train] {name} {schedule}", flush=True)
        entry = train_model(name, out, args.bf16, schedule)
        entry["when"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        models[name] = entry
        print(
            f"  {name}: test top-1 {entry['test_top1_224']:.3f}, train {entry['train_top1_224']:.3f}, "
            f"{entry['train_seconds']:.0f} s ({entry['train_cpu_seconds']:.0f} CPU s), ort ok {entry['ort']['ok']}",
            flush=True,
        )
        mpath.write_text(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
