"""EGTR's matcher and losses (naver-ai/egtr ``SceneGraphGenerationLoss`` and the vendored
``DeformableDetrHungarianMatcher``; defaults of ``train_egtr.py``).

Matching (final layer only): cost = 5 L1 + 2 focal class cost - 2 GIoU, shifted so that a perfect match
costs logit(smoothing) (``smoothing`` 1e-14); each matched query keeps its cost, each unmatched query
gets the fixed ``nonmatching_cost`` (the largest shifted cost). Losses: sigmoid focal loss (summed over
queries and classes / number of GT boxes), L1 and GIoU of the matched boxes (/ number of GT boxes),
the relation BCE and the connectivity BCE; weights 2 / 5 / 2 / 15 / 30.

Relation BCE: the multi-hot target of pair (i, j) is scaled by w_i * w_j, w = 1 - sigmoid(cost)
(adaptive relation smoothing). In training it uses every positive (pair, predicate) entry, the
``rel_sample_negatives`` * #positives entries with the largest logits among the negatives of matched
pairs, and ``rel_sample_nonmatching`` * #positives with the largest logits among the entries of pairs
with an unmatched query (each count capped by what exists; none of either kind without a positive); the
loss is the mean over every kept entry of the batch. In eval mode (``criterion.eval()``, the reference's
``model.training`` False) it is the mean over all entries. Connectivity: BCE over all N x N pairs, target 1
where the pair has any predicate, unsmoothed, mean over the batch.

Targets per image: ``labels`` [M] (0..C-1), ``boxes`` [M, 4] normalised cxcywh, ``relations`` [R, 3]
(subject index, object index, predicate); repeated rows collapse. Outputs: ``pred_logits`` [B, N, C],
``pred_boxes`` [B, N, 4], ``pred_rel`` [B, N, N, P] and ``pred_connectivity`` [B, N, N, 1] logits and,
with ``aux_loss``, ``aux_outputs`` (per earlier layer ``pred_logits``, ``pred_boxes``: detection losses
``loss_<name>_<i>`` after a matching of their own, as DETR pretraining).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_convert, generalized_box_iou

from itersg.models.losses.criterion import CriterionBase, batch_index
from itersg.models.losses.matcher import Indices, assign
from itersg.models.losses.targets import normalized_boxes

LOG_EPSILON = 1e-8  # inside the logs of the matcher's focal cost and of the non-matching cost


@dataclass(frozen=True)
class EGTRLossConfig:
    """Weights, matcher costs and relation sampling of EGTR (``train_egtr.py`` defaults).

    ``aux_loss``: detection losses on every earlier decoder layer too (False for EGTR, True for the
    Deformable DETR pretraining). A ``rel_sample_*`` of None keeps every entry of that kind.
    """

    class_weight: float = 2.0
    bbox_weight: float = 5.0
    giou_weight: float = 2.0
    relation_weight: float = 15.0
    connectivity_weight: float = 30.0
    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    smoothing: float = 1e-14
    rel_sample_negatives: int | None = 80
    rel_sample_nonmatching: int | None = 80
    rel_sample_negatives_largest: bool = True
    rel_sample_nonmatching_largest: bool = True
    aux_loss: bool = False

    def __post_init__(self):
        if not 0.0 < self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in (0, 1) (the reference divides by it), got {self.smoothing}")


def focal_class_cost(prob: Tensor, labels: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Deformable DETR's class cost [Q, T] from sigmoid probabilities [Q, C] and target labels [T]."""
    neg = (1 - alpha) * prob ** gamma * -(1 - prob + LOG_EPSILON).log()
    pos = alpha * (1 - prob) ** gamma * -(prob + LOG_EPSILON).log()
    return pos[:, labels] - neg[:, labels]


def apply_smoothing(cost: Tensor, cost_class: float, cost_giou: float, smoothing: float,
                    alpha: float = 0.25) -> Tensor:
    """The matcher's shift of every cost: - (lowest possible cost) + logit(smoothing), in float32.

    A perfect match (p = 1, same box) then costs logit(smoothing), so its weight 1 - sigmoid(cost) is
    1 - smoothing.
    """
    cost_min = cost_class * (1 - alpha) * torch.log(torch.tensor(LOG_EPSILON)) - cost_giou
    return cost - cost_min - torch.log(torch.tensor(1.0 / smoothing - 1.0))


def nonmatching_cost(cost_class: float, cost_bbox: float, cost_giou: float, smoothing: float) -> Tensor:
    """The cost given to unmatched queries: the highest shifted cost, -log(1e-8) c + 4 b + 2 g + logit(s)."""
    return (-torch.log(torch.tensor(LOG_EPSILON)) * cost_class + 4 * cost_bbox + 2 * cost_giou
            - torch.log(torch.tensor(1.0 / smoothing - 1.0)))


class EGTRMatcher(torch.nn.Module):
    """Hungarian matching with the focal class cost; also returns each matched query's (shifted) cost."""

    def __init__(self, config: EGTRLossConfig | None = None):
        super().__init__()
        self.config = config or EGTRLossConfig()

    @torch.no_grad()
    def forward(self, outputs: Mapping[str, Tensor],
                targets: Sequence[Mapping[str, Tensor]]) -> tuple[Indices, list[Tensor]]:
        """(query indices, target indices) per image, and the costs [M_b] of those matches."""
        c = self.config
        batch, queries = outputs["pred_logits"].shape[:2]
        prob = outputs["pred_logits"].flatten(0, 1).sigmoid()  # [B * N, C]
        boxes = outputs["pred_boxes"].flatten(0, 1)  # [B * N, 4]
        labels = torch.cat([t["labels"] for t in targets]).to(prob.device)
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(boxes)
        giou = generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy"))
        cost = (c.cost_bbox * torch.cdist(boxes, tgt_boxes, p=1)
                + c.cost_class * focal_class_cost(prob, labels, c.focal_alpha, c.focal_gamma)
                + c.cost_giou * -giou)
        cost = cost.view(batch, queries, len(labels)).float().cpu()
        cost = apply_smoothing(cost, c.cost_class, c.cost_giou, c.smoothing, c.focal_alpha)
        sizes = [len(t["labels"]) for t in targets]
        indices = assign(cost, sizes)
        costs = [block[i, src, tgt].to(prob.device)
                 for i, (block, (src, tgt)) in enumerate(zip(cost.split(sizes, -1), indices))]
        return indices, costs


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, num_boxes: float, alpha: float = 0.25,
                       gamma: float = 2.0) -> Tensor:
    """Focal loss of logits [B, N, C] against 0/1 targets, summed / num_boxes (the reference's
    mean over queries, sum, / num_boxes, * N)."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = (alpha * targets + (1 - alpha) * (1 - targets)) * ce * (1 - p_t) ** gamma
    return loss.mean(1).sum() / num_boxes * logits.shape[1]


def detection_losses(layer: Mapping[str, Tensor], targets: Sequence[Mapping[str, Tensor]], indices: Indices,
                     num_boxes: float, config: EGTRLossConfig) -> dict[str, Tensor]:
    """``loss_ce`` (focal; unmatched queries target no class), ``loss_bbox`` and ``loss_giou``."""
    logits, idx = layer["pred_logits"], batch_index(indices)
    onehot = torch.zeros_like(logits)
    matched_labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(logits.device)
    onehot[idx[0].to(logits.device), idx[1].to(logits.device), matched_labels] = 1.0
    src = layer["pred_boxes"][idx]
    tgt = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(src)
    giou = generalized_box_iou(box_convert(src, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy"))
    return {"loss_ce": sigmoid_focal_loss(logits, onehot, num_boxes, config.focal_alpha, config.focal_gamma),
            "loss_bbox": F.l1_loss(src, tgt, reduction="sum") / num_boxes,
            "loss_giou": (1 - torch.diag(giou)).sum() / num_boxes}


def relation_target(relations: Tensor, src: Tensor, tgt: Tensor, num_objects: int, num_queries: int,
                    num_predicates: int) -> Tensor:
    """Multi-hot [N, N, P] over query pairs: 1 at (query of subject, query of object, predicate).

    Args:
        relations: [R, 3] (subject, object, predicate) over the image's ``num_objects`` GT objects.
        src, tgt: the matching (query i is matched to GT object j).

    Relations whose subject or object has no matched query are left out; repeated rows collapse.
    """
    device = relations.device
    query_of = torch.full((num_objects,), -1, dtype=torch.int64, device=device)
    query_of[tgt.to(device)] = src.to(device)
    sub, obj = query_of[relations[:, 0]], query_of[relations[:, 1]]
    keep = (sub >= 0) & (obj >= 0)
    target = torch.zeros(num_queries, num_queries, num_predicates, device=device)
    target[sub[keep], obj[keep], relations[keep, 2]] = 1.0
    return target


def connectivity_target(rel_target: Tensor) -> Tensor:
    """[N, N, 1]: 1 where the pair has any predicate in the [N, N, P] relation target."""
    return (rel_target > 0).any(-1, keepdim=True).to(rel_target.dtype)


def query_weights(num_queries: int, src: Tensor, costs: Tensor, unmatched_cost: Tensor) -> Tensor:
    """Relation smoothing weight [N] of every query: 1 - sigmoid(its matching cost, or the non-matching cost)."""
    full = unmatched_cost.to(costs).expand(num_queries).clone()
    full[src.to(costs.device)] = costs
    return 1.0 - full.sigmoid()


def _hardest(logits: Tensor, mask: Tensor, count: int, largest: bool) -> Tensor:
    """[k, 3] indices of the ``count`` entries of ``mask`` with the largest logits (random ones otherwise)."""
    candidates = mask.nonzero()
    k = min(count, len(candidates))
    if largest:
        chosen = torch.topk(logits[mask], k, largest=True).indices
    else:
        chosen = torch.randperm(len(candidates), device=logits.device)[:k]
    return candidates[chosen]


def sample_relation_entries(logits: Tensor, target: Tensor, matched: Tensor, negatives: int | None,
                            nonmatching: int | None, negatives_largest: bool = True,
                            nonmatching_largest: bool = True) -> Tensor:
    """The (i, j, p) entries [K, 3] the training relation loss uses.

    Args:
        logits, target: [N, N, P] predicate logits and 0/1 targets (non-zero only at matched pairs).
        matched: [N] bool, the matched queries.
        negatives, nonmatching: entries kept per positive entry among the negatives of matched pairs
            (self pairs included) and among all entries of pairs with an unmatched query; None keeps all.

    Returns:
        every positive, then the chosen negatives, then the chosen non-matching entries.
    """
    positive = target > 0
    num_pos = int(positive.sum())
    pair_matched = (matched[:, None] & matched[None, :])[..., None].expand_as(target)  # [N, N, P]
    kinds = []
    for mask, per_positive, largest in ((pair_matched & ~positive, negatives, negatives_largest),
                                        (~pair_matched, nonmatching, nonmatching_largest)):
        if per_positive is None:
            kinds.append(mask.nonzero())
        else:
            kinds.append(_hardest(logits, mask, num_pos * per_positive, largest))
    return torch.cat([positive.nonzero(), *kinds])


class EGTRCriterion(CriterionBase):
    """EGTR's losses: ``loss_ce``, ``loss_bbox``, ``loss_giou``, ``loss_rel``, ``loss_connectivity``.

    ``forward`` returns the unweighted terms, ``weight_dict`` their weights and ``weighted_total`` the
    weighted sum (the project's criterion protocol). Sampling follows ``self.training``.

    Args:
        config: weights, costs, sampling.
        num_layers: decoder layers (for the ``_<i>`` weights of the auxiliary detection losses).
    """

    def __init__(self, config: EGTRLossConfig | None = None, num_layers: int = 6):
        super().__init__()
        self.config = config = config or EGTRLossConfig()
        self.matcher = EGTRMatcher(config)
        self.unmatched_cost = nonmatching_cost(config.cost_class, config.cost_bbox, config.cost_giou,
                                               config.smoothing)
        layer_weights = {"loss_ce": config.class_weight, "loss_bbox": config.bbox_weight,
                         "loss_giou": config.giou_weight}
        self.weight_dict = {**layer_weights, "loss_rel": config.relation_weight,
                            "loss_connectivity": config.connectivity_weight}
        if config.aux_loss:
            for i in range(num_layers - 1):
                self.weight_dict.update({f"{k}_{i}": v for k, v in layer_weights.items()})

    def forward(self, outputs: Mapping, targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """Unweighted losses; relation losses only when the outputs hold ``pred_rel`` and targets ``relations``.

        ``targets``: per image ``labels`` [M] and ``boxes`` [M, 4] normalised cxcywh, or dataset targets
        (pixel x1y1x2y2 ``boxes`` with the image ``size``: ``itersg.models.losses.targets``), and
        ``relations`` [R, 3] for the relation losses.
        """
        targets = [_normalised(target) for target in targets]
        indices, costs = self.matcher(outputs, targets)
        # The reference normalises by this process's GT boxes (its all-reduce is commented out).
        num_boxes = max(float(sum(len(t["labels"]) for t in targets)), 1.0)
        losses = detection_losses(outputs, targets, indices, num_boxes, self.config)
        if "pred_rel" in outputs and all("relations" in t for t in targets):
            losses.update(self.relation_losses(outputs, targets, indices, costs))
        if self.config.aux_loss:
            for i, layer in enumerate(outputs.get("aux_outputs", [])):
                layer_indices, _ = self.matcher(layer, targets)
                layer_losses = detection_losses(layer, targets, layer_indices, num_boxes, self.config)
                losses.update({f"{k}_{i}": v for k, v in layer_losses.items()})
        return losses

    def relation_losses(self, outputs: Mapping[str, Tensor], targets: Sequence[Mapping[str, Tensor]],
                        indices: Indices, costs: Sequence[Tensor]) -> dict[str, Tensor]:
        """``loss_rel`` (mean over the kept entries of the batch) and ``loss_connectivity`` (mean over pairs)."""
        pred_rel, pred_connectivity = outputs["pred_rel"], outputs["pred_connectivity"]
        num_queries, num_predicates = pred_rel.shape[1], pred_rel.shape[-1]
        rel_terms, connectivity_terms = [], []
        for logits, connectivity, target, (src, tgt), cost in zip(pred_rel, pred_connectivity, targets, indices,
                                                                  costs):
            rel_target = relation_target(target["relations"].to(logits.device), src, tgt, len(target["labels"]),
                                         num_queries, num_predicates)
            connectivity_terms.append(F.binary_cross_entropy_with_logits(
                connectivity, connectivity_target(rel_target), reduction="none"))
            weights = query_weights(num_queries, src, cost, self.unmatched_cost)
            rel_terms.append(self.relation_bce(logits, rel_target, weights, src))
        rel_terms = torch.cat(rel_terms)
        # Deviation: a batch without any kept entry gives 0, where the reference's mean is NaN.
        loss_rel = rel_terms.mean() if len(rel_terms) else pred_rel.sum() * 0.0
        return {"loss_rel": loss_rel, "loss_connectivity": torch.stack(connectivity_terms).mean()}

    def relation_bce(self, logits: Tensor, target: Tensor, weights: Tensor, src: Tensor) -> Tensor:
        """BCE terms of one image against the smoothed target w_i w_j t_ijp: the sampled entries [K] in
        training, the per-pair means [N * N] otherwise (the reference's two branches)."""
        c = self.config
        if not self.training or (c.rel_sample_negatives is None and c.rel_sample_nonmatching is None):
            smoothed = target * torch.outer(weights, weights)[..., None]
            return F.binary_cross_entropy_with_logits(logits, smoothed, reduction="none").mean(-1).reshape(-1)
        matched = torch.zeros(len(weights), dtype=torch.bool, device=logits.device)
        matched[src.to(logits.device)] = True
        i, j, p = sample_relation_entries(
            logits.detach(), target, matched, c.rel_sample_negatives, c.rel_sample_nonmatching,
            c.rel_sample_negatives_largest, c.rel_sample_nonmatching_largest).unbind(1)
        return F.binary_cross_entropy_with_logits(logits[i, j, p], target[i, j, p] * (weights[i] * weights[j]),
                                                  reduction="none")


def _normalised(target: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """A dataset target (pixel boxes and ``size``) with its boxes as the losses take them; others as they are."""
    if "size" not in target:
        return target
    return {**target, "boxes": normalized_boxes(target["boxes"].float(), target["size"])}
