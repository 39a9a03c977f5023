"""Validation during training: the loss on a fixed set of validation images, and metrics.

Every process takes an equal, contiguous share of the first ``train.val_images`` images of the
val split (the count is rounded down to a multiple of the number of processes so that every
process runs the same number of batches: the criterion all-reduces). Predictions and ground truth
are gathered on rank 0, which computes the metrics (R@50 / mR@50 for scene graphs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from itersg.engine.distributed import all_gather_objects, all_reduce_sum
from itersg.engine.loop import forward_loss, move_to
from itersg.engine.rng import rng_state, set_rng_state
from itersg.errors import UserError
from itersg.precision import Precision

# (outputs, targets) -> per-image predictions; ground-truth/prediction pairs -> named metrics.
Predict = Callable[[Mapping[str, Any], Sequence[Mapping[str, Tensor]]], list[dict]]
Score = Callable[[list[tuple[dict, dict]]], dict[str, float]]


def validation_subset(dataset: Dataset, count: int, rank: int, world_size: int) -> Subset:
    """This process's share of the first ``count`` images (equal shares on every process)."""
    usable = min(count, len(dataset))  # type: ignore[arg-type]
    if usable < world_size:
        raise UserError(f"{usable} validation image(s) cannot be shared by {world_size} processes; raise "
                        "train.val_images (or data.num_val_images)")
    per_rank = usable // world_size
    return Subset(dataset, range(rank * per_rank, (rank + 1) * per_rank))


@torch.no_grad()
def validate(module: nn.Module, criterion: nn.Module, loader: DataLoader, precision: Precision,
             device: torch.device, predict: Predict | None = None, score: Score | None = None,
             ground_truth: Callable[[Mapping[str, Tensor]], dict] | None = None) -> dict[str, float]:
    """``{"val/loss": .., "val/<metric>": ..}`` (metrics on rank 0 only; every rank must call this).

    The random generators are restored afterwards, so validating does not change training.
    """
    saved_rng = rng_state()
    was_training = module.training
    module.eval()
    criterion.eval()  # a criterion that samples in training (EGTR's) uses every entry here, as the reference
    try:
        loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
        pairs: list[tuple[dict, dict]] = []
        for images, targets in loader:
            images, targets = move_to(images, device), move_to(targets, device)
            total, _, outputs = forward_loss(module, criterion, images, targets, precision)
            one = torch.ones((), dtype=torch.float64, device=device)
            loss_sum += torch.stack([total.detach().double(), one])
            if predict is not None and ground_truth is not None:
                predictions = predict(outputs, targets)
                pairs += [(ground_truth(t), _to_numpy(p)) for t, p in zip(targets, predictions, strict=True)]
        loss_sum = all_reduce_sum(loss_sum)
        results = {"val/loss": float(loss_sum[0] / loss_sum[1].clamp(min=1))}
        if score is not None and predict is not None:
            gathered = all_gather_objects(pairs)
            if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
                return results
            all_pairs = [pair for part in gathered for pair in part]
            results.update({f"val/{name}": value for name, value in score(all_pairs).items()})
        return results
    finally:
        module.train(was_training)
        criterion.train()
        set_rng_state(saved_rng)


def _to_numpy(prediction: Mapping[str, Any]) -> dict:
    return {k: v.cpu().numpy() if isinstance(v, Tensor) else v for k, v in prediction.items()}
