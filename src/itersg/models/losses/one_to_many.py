"""SpeaQ's quality-aware multi-assignment: how many queries each ground-truth relation is matched to.

For every ground-truth relation t and query q of one decoder layer (``SpeaQHungarianMatcher`` with
``ONE2MANY_SCHEME: dynamic`` in mlvlab/SpeaQ):

    quality(q, t) = combine(IoU(subject box of q, subject of t), IoU(object box of q, object of t))
                    + predicate_weight * p_q(predicate of t)

where both IoUs are 0 for a query outside t's predicate group, ``combine`` is one of min / max /
geometric mean / arithmetic mean (the released model: max) and the predicate term is optional (the
released model: weight -0.5, on the softmax over predicates and "no relation"). Then

    k(t) = max(1, trunc(sum of the ``k`` largest quality(., t) over the queries))

and t appears k(t) times among the targets of the Hungarian matching. Note that the predicate term
is not masked by the groups, as in the official code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchvision.ops import box_convert, box_iou

QUALITY_SCHEMES = ("min", "max", "gm", "am")


def combine_ious(sub_iou: Tensor, obj_iou: Tensor, scheme: str) -> Tensor:
    """Subject and object IoUs (same shape) -> one localisation quality per pair."""
    if scheme == "min":
        return torch.minimum(sub_iou, obj_iou)
    if scheme == "max":
        return torch.maximum(sub_iou, obj_iou)
    if scheme == "gm":
        return (sub_iou * obj_iou).sqrt()
    if scheme == "am":
        return (sub_iou + obj_iou) / 2
    raise ValueError(f"unknown quality scheme {scheme!r}; expected one of {QUALITY_SCHEMES}")


def pair_iou(boxes: Tensor, tgt_boxes: Tensor) -> Tensor:
    """IoU [B, Q, T] of predicted (cx, cy, w, h) boxes [B, Q, 4] with target boxes [T, 4]."""
    batch, queries = boxes.shape[:2]
    iou = box_iou(box_convert(boxes.flatten(0, 1), "cxcywh", "xyxy"),
                  box_convert(tgt_boxes.to(boxes), "cxcywh", "xyxy"))
    return iou.view(batch, queries, -1)


def assignment_quality(layer: Mapping[str, Tensor], gathered: Mapping[str, Tensor], in_group: Tensor | None,
                       scheme: str, predicate_weight: float | None) -> Tensor:
    """quality(q, t) [B, Q, T] of one layer's outputs against all T targets of the batch.

    Args:
        layer: ``pred_{sub,obj}_boxes`` [B, Q, 4] and ``pred_rel_logits`` [B, Q, P + 1].
        gathered: ``sub_boxes``, ``obj_boxes`` [T, 4] and ``rel_labels`` [T], every image's targets.
        in_group: [Q, T] True where query and target share a predicate group; None: no groups.
        scheme: how the two IoUs combine (``QUALITY_SCHEMES``).
        predicate_weight: weight of the matched predicate's probability; None leaves it out.
    """
    sub_iou = pair_iou(layer["pred_sub_boxes"], gathered["sub_boxes"])
    obj_iou = pair_iou(layer["pred_obj_boxes"], gathered["obj_boxes"])
    if in_group is not None:
        sub_iou, obj_iou = sub_iou * in_group, obj_iou * in_group
    quality = combine_ious(sub_iou, obj_iou, scheme)
    if predicate_weight is not None:
        prob = layer["pred_rel_logits"].softmax(-1)
        quality = quality + predicate_weight * prob[..., gathered["rel_labels"]]
    return quality


def dynamic_k(quality: Tensor, sizes: Sequence[int], k: int) -> list[Tensor]:
    """Copies of every target: for image i, [sizes[i]] of max(1, trunc(sum of its top-k qualities)).

    Args:
        quality: [B, Q, T] with T = sum(sizes); the columns of image i follow those of image i - 1.
        sizes: targets per image.
        k: how many of the best queries vote (at most Q).
    """
    top = torch.topk(quality, k, dim=1).values.sum(1)  # [B, T]
    columns = top.split(list(sizes), dim=-1)
    return [columns[i][i].int().clamp(min=1).long() for i in range(len(sizes))]


def repeat_targets(targets: Sequence[Mapping[str, Tensor]], copies: Sequence[Tensor]) -> list[dict[str, Tensor]]:
    """Every per-relation tensor of image i repeated ``copies[i]`` times, row by row."""
    return [{key: value.repeat_interleave(c.to(value.device), dim=0) for key, value in target.items()}
            for target, c in zip(targets, copies)]
