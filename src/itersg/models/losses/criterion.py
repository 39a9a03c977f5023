"""Losses of IterativeSG (``IterativeRelationCriterion``) and of DETR (``SetCriterion``).

Every loss is ``loss_<name>`` (``_<i>`` for the earlier decoder layer i) and ``weight_dict`` holds
its weight; ``weighted_total`` sums the weighted losses. Box losses are normalised by the number of
matched ground-truth rows (averaged over processes when torch.distributed runs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou_loss

from itersg.models.config import LossConfig
from itersg.models.losses.matcher import BRANCHES, HungarianMatcher, Indices, TripletMatcher
from itersg.models.losses.targets import detection_targets, relation_targets


def predicate_class_weights(frequencies: Tensor | None, num_predicates: int, alpha: float, beta: float,
                            no_relation_weight: float) -> Tensor:
    """Cross-entropy weights [num_predicates + 1]: w_c = max(1, alpha / (f_c + 1e-5)) ** beta.

    ``frequencies`` [num_predicates] are the training-split predicate frequencies (summing to 1); the
    reference adds 1e-5 to each and writes the weight as max(1, sqrt(alpha / f)) ** (2 * beta). The
    last entry is the no-relation weight. Without frequencies every predicate weighs 1.
    """
    if frequencies is None:
        weights = torch.ones(num_predicates)
    else:
        frequencies = torch.as_tensor(frequencies, dtype=torch.float32)
        if frequencies.shape != (num_predicates,):
            raise ValueError(f"expected {num_predicates} predicate frequencies, "
                             f"got {tuple(frequencies.shape)}")
        weights = (alpha / (frequencies + 1e-5)).clamp(min=1.0) ** beta
    return torch.cat([weights, torch.tensor([no_relation_weight])])


def num_matched(indices: Indices, device: torch.device) -> float:
    """Matched rows in the batch, averaged over processes, at least 1."""
    count = torch.tensor([float(sum(len(src) for src, _ in indices))], device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return max(count.item(), 1.0)


def batch_index(indices: Indices) -> tuple[Tensor, Tensor]:
    """(image index, query index) of every matched prediction."""
    images = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    return images, torch.cat([src for src, _ in indices])


def class_loss(logits: Tensor, indices: Indices, target_labels: Sequence[Tensor],
               class_weight: Tensor) -> Tensor:
    """Weighted cross-entropy over all queries; unmatched queries target the last ("no") class."""
    target = torch.full(logits.shape[:2], logits.shape[-1] - 1, dtype=torch.int64, device=logits.device)
    matched = torch.cat([t[j] for t, (_, j) in zip(target_labels, indices)])
    target[batch_index(indices)] = matched.to(logits.device)
    return F.cross_entropy(logits.transpose(1, 2), target, class_weight.to(logits.device))


def box_losses(boxes: Tensor, indices: Indices, target_boxes: Sequence[Tensor],
               num: float) -> tuple[Tensor, Tensor]:
    """L1 and GIoU losses of the matched boxes (normalised cxcywh), each summed and divided by ``num``."""
    src = boxes[batch_index(indices)]
    tgt = torch.cat([t[j] for t, (_, j) in zip(target_boxes, indices)]).to(src)
    if len(src) == 0:
        zero = boxes.sum() * 0.0
        return zero, zero
    l1 = F.l1_loss(src, tgt, reduction="sum") / num
    giou = generalized_box_iou_loss(box_convert(src, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy"),
                                    reduction="sum") / num
    return l1, giou


class CriterionBase(nn.Module):
    """Shared bookkeeping: the weight dict and the weighted total."""

    weight_dict: dict[str, float]

    def weighted_total(self, losses: Mapping[str, Tensor]) -> Tensor:
        """Sum of ``weight_dict[name] * loss`` over the losses that have a weight."""
        return sum(self.weight_dict[k] * v for k, v in losses.items() if k in self.weight_dict)


class TripletCriterion(CriterionBase):
    """IterativeSG's loss: one Hungarian matching (summed over layers) supervises every layer.

    Per layer and branch (``sub``, ``obj``, ``rel``): ``loss_<b>_ce`` (entity classes with the
    no-object weight; predicates re-weighted by ``predicate_class_weights``), ``loss_<b>_bbox`` (L1)
    and ``loss_<b>_giou``. The relation box target is the subject-centre to object-centre box.

    Args:
        num_classes, num_predicates: without the "no object" / "no relation" classes.
        config: loss weights, alpha and beta.
        num_layers: decoder layers (for the ``_<i>`` weights of the auxiliary outputs).
        predicate_frequencies: [num_predicates] training frequencies, or None for no re-weighting.
        aux_head: a module with ``loss(aux_outputs, targets, image_sizes) -> dict``; its losses are
            weighted by ``config.aux_head_weight`` unless ``weight_dict`` already names them.
    """

    def __init__(self, num_classes: int, num_predicates: int, config: LossConfig | None = None,
                 num_layers: int = 6, predicate_frequencies: Tensor | None = None,
                 aux_head: nn.Module | None = None):
        super().__init__()
        config = config or LossConfig()
        self.config = config
        self.matcher = TripletMatcher(config.matcher())
        # Only the bound method: registering the head would copy its weights into this state dict.
        self.aux_head_loss = aux_head.loss if aux_head is not None else None
        entity_weight = torch.ones(num_classes + 1)
        entity_weight[-1] = config.no_object_weight
        self.register_buffer("entity_class_weight", entity_weight)
        self.register_buffer("predicate_class_weight", predicate_class_weights(
            predicate_frequencies, num_predicates, config.alpha, config.beta, config.no_relation_weight))
        layer_weights = {}
        for b in BRANCHES:
            layer_weights[f"loss_{b}_ce"] = config.relation_weight if b == "rel" else config.class_weight
            layer_weights[f"loss_{b}_bbox"] = config.bbox_weight
            layer_weights[f"loss_{b}_giou"] = config.giou_weight
        self.weight_dict = dict(layer_weights)
        for i in range(num_layers - 1):
            self.weight_dict.update({f"{k}_{i}": v for k, v in layer_weights.items()})

    def forward(self, outputs: Mapping, targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """Unweighted losses of ``outputs`` (``IterativeSG.forward``) against dataset ``targets``."""
        prepared = relation_targets(targets)
        indices = self.matcher(outputs, prepared)
        num = num_matched(indices, outputs["pred_rel_logits"].device)
        losses = self.layer_losses(outputs, prepared, indices, num)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update({f"{k}_{i}": v for k, v in self.layer_losses(aux, prepared, indices, num).items()})
        losses.update(self.aux_head_losses(outputs, targets))
        return losses

    def aux_head_losses(self, outputs: Mapping, targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """The auxiliary head's losses (none without one), weighted by ``aux_head_weight`` unless named."""
        if self.aux_head_loss is None or "aux_head" not in outputs:
            return {}
        image_sizes = [tuple(int(s) for s in t["size"]) for t in targets]
        aux_losses = self.aux_head_loss(outputs["aux_head"], targets, image_sizes)
        for name in aux_losses:
            self.weight_dict.setdefault(name, self.config.aux_head_weight)
        return aux_losses

    def layer_losses(self, layer: Mapping[str, Tensor], prepared: Sequence[Mapping[str, Tensor]],
                     indices: Indices, num: float) -> dict[str, Tensor]:
        losses = {}
        for b in BRANCHES:
            class_weight = self.predicate_class_weight if b == "rel" else self.entity_class_weight
            labels = [t[f"{b}_labels"] for t in prepared]
            losses[f"loss_{b}_ce"] = class_loss(layer[f"pred_{b}_logits"], indices, labels, class_weight)
            boxes = [t[f"{b}_boxes"] for t in prepared]
            losses[f"loss_{b}_bbox"], losses[f"loss_{b}_giou"] = box_losses(
                layer[f"pred_{b}_boxes"], indices, boxes, num)
        return losses


class SetCriterion(CriterionBase):
    """DETR's loss (VG pretraining): per-layer matching, ``loss_ce``, ``loss_bbox``, ``loss_giou``."""

    def __init__(self, num_classes: int, config: LossConfig | None = None, num_layers: int = 6):
        super().__init__()
        config = config or LossConfig()
        self.matcher = HungarianMatcher(config.matcher())
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = config.no_object_weight
        self.register_buffer("empty_weight", empty_weight)
        layer_weights = {"loss_ce": config.class_weight, "loss_bbox": config.bbox_weight,
                         "loss_giou": config.giou_weight}
        self.weight_dict = dict(layer_weights)
        for i in range(num_layers - 1):
            self.weight_dict.update({f"{k}_{i}": v for k, v in layer_weights.items()})

    def forward(self, outputs: Mapping, targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        prepared = detection_targets(targets)
        device = outputs["pred_logits"].device
        all_targets = [(t["labels"], t["boxes"]) for t in prepared]
        num = max(float(sum(len(t[0]) for t in all_targets)), 1.0)
        if dist.is_available() and dist.is_initialized():
            total = torch.tensor([num], device=device)
            dist.all_reduce(total)
            num = max(total.item() / dist.get_world_size(), 1.0)
        losses = {}
        for i, layer in enumerate([*outputs.get("aux_outputs", []), outputs]):
            suffix = "" if i == len(outputs.get("aux_outputs", [])) else f"_{i}"
            indices = self.matcher(layer, prepared)
            losses[f"loss_ce{suffix}"] = class_loss(layer["pred_logits"], indices,
                                                    [t["labels"] for t in prepared], self.empty_weight)
            losses[f"loss_bbox{suffix}"], losses[f"loss_giou{suffix}"] = box_losses(
                layer["pred_boxes"], indices, [t["boxes"] for t in prepared], num)
        return losses

