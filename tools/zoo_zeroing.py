"""Zeroing filters the way NNCF filter pruning leaves them, in PyTorch (used by
tools/export_zoo.py): BatchNorm statistics calibrated then randomised, Conv -> BN pairs found by
tracing, the lowest-L2 filters of each conv zeroed (per group for grouped convs), BN folded."""

from __future__ import annotations

import collections
import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

SEED = 0
PRUNE_RATIO = 0.25


@dataclass
class PruneStats:
    """What :func:`zero_filters` did."""

    num_convs: int = 0
    num_convs_zeroed: int = 0
    num_grouped_convs: int = 0
    num_depthwise_convs: int = 0
    filters_total: int = 0
    filters_zeroed: int = 0
    num_bn: int = 0
    num_conv_bn_pairs: int = 0
    zeroed: dict[str, list[int]] = field(default_factory=dict)


def _seed_all(seed: int = SEED) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def calibrate_and_randomise_bn(model: nn.Module, input_shape: tuple[int, ...], seed: int = SEED) -> None:
    """Set BN running stats from one random batch, then perturb them and gamma/beta."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return
    gen = torch.Generator().manual_seed(seed + 1)
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average -> exactly this batch's stats
    model.train()
    with torch.no_grad():
        model(torch.randn(2, *input_shape[1:], generator=gen))
    model.eval()
    with torch.no_grad():
        for bn in bns:
            c = bn.num_features
            std = bn.running_var.sqrt()
            bn.running_mean += 0.1 * std * torch.randn(c, generator=gen)
            bn.running_var *= torch.empty(c).uniform_(0.75, 1.33, generator=gen)
            bn.weight.copy_(torch.empty(c).uniform_(0.5, 1.5, generator=gen))
            bn.bias.copy_(0.2 * torch.randn(c, generator=gen))
            bn.momentum = 0.1


def find_conv_bn_pairs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, str]:
    """Map conv module name -> name of the BatchNorm2d that directly consumes its output."""
    names = {m: n for n, m in model.named_modules()}
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    consumers: dict[str, list[str]] = collections.defaultdict(list)
    handles = []

    def conv_hook(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        produced[id(out)] = (names[mod], out)  # keep a reference so ids are not reused

    def pre_hook(mod: nn.Module, inp: tuple[Any, ...]) -> None:
        for t in inp:
            if isinstance(t, torch.Tensor) and id(t) in produced and produced[id(t)][1] is t:
                consumers[produced[id(t)][0]].append(names[mod])

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        if len(list(m.children())) == 0:  # every leaf module counts as a consumer
            handles.append(m.register_forward_pre_hook(pre_hook))
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
    mods = dict(model.named_modules())
    pairs = {}
    for conv, users in consumers.items():
        if len(users) == 1 and isinstance(mods[users[0]], nn.BatchNorm2d):
            if mods[users[0]].num_features == mods[conv].out_channels:
                pairs[conv] = users[0]
    return pairs


def zero_filters(
    model: nn.Module,
    pairs: dict[str, str],
    skip: tuple[str, ...] = (),
    ratio: float = PRUNE_RATIO,
    grouped: str = "per-group",
) -> PruneStats:
    """Zero the lowest-L2 ``ratio`` of filters of each prunable conv (NNCF style)."""
    stats = PruneStats()
    mods = dict(model.named_modules())
    stats.num_bn = sum(isinstance(m, nn.BatchNorm2d) for m in mods.values())
    stats.num_conv_bn_pairs = len(pairs)
    with torch.no_grad():
        for name, conv in mods.items():
            if not isinstance(conv, nn.Conv2d):
                continue
            stats.num_convs += 1
            stats.filters_total += conv.out_channels
            g = conv.groups
            per_group = conv.out_channels // g
            if g > 1:
                stats.num_grouped_convs += 1
                if per_group == 1 or g == conv.in_channels == conv.out_channels:
                    stats.num_depthwise_convs += 1
            if name in skip or (g > 1 and grouped == "skip"):
                continue
            n = math.floor(ratio * per_group)
            if n == 0:
                continue
            norms = conv.weight.detach().flatten(1).norm(dim=1)
            chosen: list[int] = []
            for k in range(g):
                sl = norms[k * per_group : (k + 1) * per_group]
                order = torch.argsort(sl, stable=True)[:n]
                chosen.extend(int(i) + k * per_group for i in order)
            chosen.sort()
            idx = torch.tensor(chosen)
            conv.weight[idx] = 0
            if conv.bias is not None:
                conv.bias[idx] = 0
            if name in pairs:
                bn = mods[pairs[name]]
                bn.weight[idx] = 0
                bn.bias[idx] = 0
            stats.num_convs_zeroed += 1
            stats.filters_zeroed += len(chosen)
            stats.zeroed[name] = chosen
    return stats


def fold_bn(model: nn.Module, pairs: dict[str, str]) -> nn.Module:
    """Return a copy with every paired BN folded into its conv (BN replaced by Identity)."""
    model = copy.deepcopy(model).eval()
    mods = dict(model.named_modules())

    def set_mod(name: str, new: nn.Module) -> None:
        parent, _, attr = name.rpartition(".")
        setattr(mods[parent] if parent else model, attr, new)

    for conv_name, bn_name in pairs.items():
        set_mod(conv_name, fuse_conv_bn_eval(mods[conv_name], mods[bn_name]))
        set_mod(bn_name, nn.Identity())
    return model
