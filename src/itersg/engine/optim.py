"""AdamW with the reference parameter groups, the step learning-rate drop, and mixed precision.

As DETR and IterativeSG: two groups, the backbone at ``train.lr_backbone`` and everything else at
``train.lr``, both with ``train.weight_decay``; frozen parameters are left out. A model may name its own
groups: ``slow_parameter(name)`` (EGTR: the backbone, reference points and sampling offsets, at
``train.lr_backbone``) and ``new_parameter(name)`` (EGTR's relation head, at ``train.lr_new``). The
learning rate drops x0.1 once, after ``round(lr_drop_fraction * iterations)`` updates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

LR_DROP_FACTOR = 0.1


def is_backbone_parameter(name: str) -> bool:
    """True for parameters of a ``backbone`` sub-module (any level of the module tree)."""
    return "backbone" in name.split(".")


def parameter_groups(model: nn.Module, lr: float, lr_backbone: float,
                     lr_new: float | None = None) -> list[dict[str, Any]]:
    """``[{"params": rest, "lr": lr, "name": "rest"}, {"params": backbone, "lr": lr_backbone, ...},
    {"params": new, "lr": lr_new, "name": "new"}]``: the backbone group by the model's ``slow_parameter``
    (default: a ``backbone`` sub-module), the new group by its ``new_parameter`` (default: none; ``lr_new``
    None = ``lr``).

    Parameters with ``requires_grad=False`` are excluded; empty groups are dropped.
    """
    slow = getattr(model, "slow_parameter", is_backbone_parameter)
    new = getattr(model, "new_parameter", lambda name: False)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"name": "rest", "lr": lr, "params": [p for n, p in trainable if not slow(n) and not new(n)]},
              {"name": "backbone", "lr": lr_backbone, "params": [p for n, p in trainable if slow(n) and not new(n)]},
              {"name": "new", "lr": lr if lr_new is None else lr_new, "params": [p for n, p in trainable if new(n)]}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, train: Mapping[str, Any], device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``parameter_groups`` (fused kernels on CUDA)."""
    groups = parameter_groups(model, train["lr"], train["lr_backbone"], train.get("lr_new"))
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=train["lr"], weight_decay=train["weight_decay"], **fused)


def lr_drop_iteration(iterations: int, fraction: float) -> int:
    """Number of updates after which the learning rate is multiplied by 0.1 (160,000 of 250,000)."""
    return round(fraction * iterations)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, iterations: int,
                       fraction: float) -> torch.optim.lr_scheduler.MultiStepLR:
    """Step schedule, stepped once per iteration: update ``i`` (0-based) uses lr x 0.1 iff i >= drop."""
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[lr_drop_iteration(iterations, fraction)], gamma=LR_DROP_FACTOR)


def to_float32(tree: Any) -> Any:
    """Cast every floating tensor of a nested dict/list output to float32 (losses run in fp32)."""
    if isinstance(tree, torch.Tensor):
        return tree.float() if tree.is_floating_point() else tree
    if isinstance(tree, Mapping):
        return {k: to_float32(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(to_float32(v) for v in tree)
    return tree


def gradient_parameters(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    """Every parameter the optimizer updates (the 'full model' of gradient clipping)."""
    for group in optimizer.param_groups:
        yield from group["params"]
