"""Hungarian matching of predictions to ground truth: per layer for DETR, over all layers for IterativeSG.

Costs are computed batched on the model's device; only ``linear_sum_assignment`` runs per image on
the CPU. Cost per (query, target): ``cost_bbox * L1 - cost_class * p(class) - cost_giou * GIoU``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou

from itersg.models.config import MatcherConfig

Indices = list[tuple[Tensor, Tensor]]
BRANCHES = ("sub", "obj", "rel")


# Stand-in for NaN/inf matching costs: larger than any finite cost of the matcher's terms.
NON_FINITE_COST = 1e8


def pair_cost(logits: Tensor, boxes: Tensor, tgt_labels: Tensor, tgt_boxes: Tensor,
              config: MatcherConfig) -> Tensor:
    """Matching cost [B * Q, T] of predictions [B, Q, K] / [B, Q, 4] against all T targets of the batch."""
    prob = logits.flatten(0, 1).softmax(-1)  # [B * Q, K]
    boxes = boxes.flatten(0, 1)  # [B * Q, 4]
    cost_class = -prob[:, tgt_labels]
    cost_bbox = torch.cdist(boxes, tgt_boxes.to(boxes), p=1)
    cost_giou = -generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"),
                                     box_convert(tgt_boxes.to(boxes), "cxcywh", "xyxy"))
    return config.cost_bbox * cost_bbox + config.cost_class * cost_class + config.cost_giou * cost_giou


def assign(cost: Tensor, sizes: Sequence[int]) -> Indices:
    """Split a [B, Q, T] cost by image and solve each assignment: [(query indices, target indices)].

    Deviation: non-finite costs (a model whose outputs became NaN) are replaced by finite ones so that
    the assignment is still solved; the reference lets scipy raise. The loss is then non-finite and the
    training step is skipped (``engine.loop.train_step``) instead of the run ending with a traceback.
    Finite costs are untouched.
    """
    cost = cost.detach().float().cpu()
    if not torch.isfinite(cost).all():
        cost = torch.nan_to_num(cost, nan=NON_FINITE_COST, posinf=NON_FINITE_COST, neginf=-NON_FINITE_COST)
    indices = []
    for image, block in enumerate(cost.split(list(sizes), -1)):
        rows, cols = linear_sum_assignment(block[image].numpy())
        indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
    return indices


class HungarianMatcher(nn.Module):
    """DETR's matcher for one layer's ``pred_logits``/``pred_boxes`` and targets ``labels``/``boxes``."""

    def __init__(self, config: MatcherConfig | None = None):
        super().__init__()
        self.config = config or MatcherConfig()

    @torch.no_grad()
    def forward(self, outputs: Mapping[str, Tensor], targets: Sequence[Mapping[str, Tensor]]) -> Indices:
        batch, queries = outputs["pred_logits"].shape[:2]
        labels = torch.cat([t["labels"] for t in targets])
        boxes = torch.cat([t["boxes"] for t in targets])
        cost = pair_cost(outputs["pred_logits"], outputs["pred_boxes"], labels, boxes, self.config)
        return assign(cost.view(batch, queries, -1), [len(t["labels"]) for t in targets])


class TripletMatcher(nn.Module):
    """IterativeSG's matcher (``IterativeHungarianMatcher.forward_relation``).

    A query is matched to a ground-truth triplet using the cost summed over the subject, object and
    relation branches (class, L1 and GIoU each; the relation box is the centre box) and over every
    decoder layer, so one assignment serves all layers.
    """

    def __init__(self, config: MatcherConfig | None = None):
        super().__init__()
        self.config = config or MatcherConfig()

    @torch.no_grad()
    def forward(self, outputs: Mapping, targets: Sequence[Mapping[str, Tensor]]) -> Indices:
        """``outputs`` as ``IterativeSG.forward`` returns them; ``targets`` from ``relation_targets``."""
        batch, queries = outputs["pred_rel_logits"].shape[:2]
        gathered = {key: torch.cat([t[key] for t in targets]) for key in targets[0]}
        cost = sum(self.layer_cost(layer, gathered) for layer in [outputs, *outputs.get("aux_outputs", [])])
        return assign(cost.view(batch, queries, -1), [len(t["rel_labels"]) for t in targets])

    def layer_cost(self, layer: Mapping[str, Tensor], gathered: Mapping[str, Tensor]) -> Tensor:
        """Cost [B * Q, T] of one decoder layer, summed over the three branches."""
        return sum(
            pair_cost(layer[f"pred_{b}_logits"], layer[f"pred_{b}_boxes"], gathered[f"{b}_labels"],
                      gathered[f"{b}_boxes"], self.config)
            for b in BRANCHES)
