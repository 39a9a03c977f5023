"""One training iteration (forward, loss, backward, clip, step) and the running loss averages."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from itersg.engine.distributed import all_reduce_sum, any_rank
from itersg.engine.optim import gradient_parameters, to_float32
from itersg.errors import UserError
from itersg.precision import Precision

# Loss terms of earlier decoder layers end in "_<layer>"; the curves show the last layer's only.
AUX_LAYER_SUFFIX = re.compile(r"_\d+$")


class TrainingDiverged(UserError):
    """The loss or the gradients stayed NaN or infinite for ``train.max_nonfinite_steps`` steps in a row."""


def move_to(tree: Any, device: torch.device) -> Any:
    """Move every tensor of a nested dict/list/tuple to ``device``."""
    if isinstance(tree, Tensor):
        return tree.to(device, non_blocking=True)
    if isinstance(tree, Mapping):
        return {k: move_to(v, device) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(move_to(v, device) for v in tree)
    return tree


def forward_loss(model: nn.Module, criterion: nn.Module, images: Sequence[Tensor],
                 targets: Sequence[Mapping[str, Tensor]], precision: Precision) -> tuple[Tensor, dict, dict]:
    """Weighted total loss (a scalar), the unweighted loss terms and the model outputs.

    The model runs under autocast; the criterion (matching, losses) runs in float32.
    """
    with precision.autocast():
        outputs = model(images)
    outputs = to_float32(outputs)
    losses = criterion(outputs, targets)
    return criterion.weighted_total(losses), losses, outputs


def train_step(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, precision: Precision,
               images: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]],
               clip_max_norm: float) -> tuple[dict[str, Tensor], bool]:
    """One update; returns (detached ``{"loss": total, "loss_<name>": term, ..., "grad_norm": ..}``, finite).

    A step whose loss or gradient norm is not finite on any process is skipped: no optimizer update (the
    schedule still advances), as the reference's fp16 GradScaler skips such steps.
    """
    total, losses, _ = forward_loss(model, criterion, images, targets, precision)
    optimizer.zero_grad(set_to_none=True)
    precision.scaler.scale(total).backward()
    stats = {"loss": total.detach(), **{k: v.detach() for k, v in losses.items()
                                         if not AUX_LAYER_SUFFIX.search(k)}}
    precision.scaler.unscale_(optimizer)
    parameters = list(gradient_parameters(optimizer))
    if clip_max_norm > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, clip_max_norm)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
    stats["grad_norm"] = grad_norm.detach()
    # The gradients are the same on every process after DDP's all-reduce, but a loss term without
    # gradient may be non-finite on one process only: decide together, so the weights stay equal.
    [not_finite] = any_rank([not bool(torch.isfinite(grad_norm) & torch.isfinite(total))], total.device)
    finite = not not_finite
    if finite:
        precision.scaler.step(optimizer)
    precision.scaler.update()
    scheduler.step()
    return stats, finite


class RunningMeans:
    """Means of detached scalar tensors since the last ``pop``, averaged over all processes."""

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._count = 0

    def add(self, stats: Mapping[str, Tensor]) -> None:
        for name, value in stats.items():
            value = value.float()
            self._sums[name] = self._sums[name] + value if name in self._sums else value.clone()
        self._count += 1

    def state_dict(self) -> dict[str, Any]:
        """The partial window (CPU tensors), so a resumed run logs the same means as an uninterrupted one."""
        return {"sums": {k: v.detach().cpu() for k, v in self._sums.items()}, "count": self._count}

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        self._sums = {k: v.to(device) for k, v in state["sums"].items()}
        self._count = int(state["count"])

    def pop(self) -> dict[str, float]:
        """The means (every rank must call this at the same iteration: one all-reduce)."""
        if not self._sums:
            return {}
        names = sorted(self._sums)
        stacked = torch.stack([self._sums[n] for n in names]) / self._count
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        means = (all_reduce_sum(stacked) / world).tolist()
        self._sums.clear()
        self._count = 0
        return dict(zip(names, means, strict=True))
