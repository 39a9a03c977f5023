"""Model outputs -> per-image predictions in original image pixels (the project's Predictions dicts).

Scene graphs follow IterativeSG's test-time procedure (``IterativeRelationDetr.inference`` with
``TEST_INDEX = -1``): the 2Q subject/object boxes of the last layer go
through class-aware NMS (IoU 0.5, normalised coordinates); every box is mapped to the kept box of
its class with the highest IoU (ties: the first kept box in score order); each query's triplet score
is p(predicate) * p(subject class) * p(object class) from its own, pre-merge distributions; rows are
sorted by it (stable), duplicate (subject, object, predicate) rows keep their first occurrence, and
at most ``max_triplets`` rows remain. Boxes are then scaled as detectron2's ``detector_postprocess``
does (normalised -> transformed image -> original image), clipped to [0, W] x [0, H] and empty ones
dropped; unlike the reference, which drops them without re-indexing ``rel_pair_idxs``, relation rows
are re-indexed and rows that use a dropped box are removed (the reference can only be wrong there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_convert

Sizes = Sequence[Sequence[int]] | Tensor  # (H, W) per image, [B, 2]


def _iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of x1y1x2y2 boxes that broadcast against each other (detectron2's ``pairwise_iou`` formula:
    continuous areas, 0 where the boxes do not intersect)."""
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    top_left = torch.max(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    return torch.where(inter > 0, inter / (area1 + area2 - inter), torch.zeros_like(inter))


def pairwise_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU [N, M] of x1y1x2y2 boxes; 0 where the boxes do not intersect (detectron2's convention)."""
    return _iou(boxes1[:, None, :], boxes2[None, :, :])


def _same_class_pairs(labels: Tensor, kept_labels: Tensor) -> tuple[Tensor, Tensor]:
    """Every (box, kept box) pair of the same class: two [P] index tensors, kept positions ascending
    within each box's run. Each class of ``labels`` has at least one kept box (NMS keeps its best)."""
    order = torch.sort(kept_labels, stable=True).indices  # by class, score order within a class
    sorted_labels = kept_labels[order]
    first = torch.searchsorted(sorted_labels, labels)
    counts = torch.searchsorted(sorted_labels, labels, right=True) - first
    box = torch.repeat_interleave(torch.arange(len(labels), device=labels.device), counts)
    run_start = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    within = torch.arange(len(box), device=labels.device) - run_start
    return box, order[first[box] + within]


def merge_entities(boxes: Tensor, scores: Tensor, labels: Tensor,
                   iou_threshold: float) -> tuple[Tensor, Tensor]:
    """Class-aware NMS and the mapping of every box to a kept box.

    Only same-class (box, kept box) pairs are compared (the reference compares all pairs and masks the
    others; the result is the same, at a fraction of the cost on 600 boxes).

    Args:
        boxes: [N, 4] x1y1x2y2; scores, labels: [N].

    Returns:
        keep: [K] indices of the kept boxes, by decreasing score;
        assignment: [N] position in ``keep`` of the same-class kept box with the highest IoU (ties: the
        first, i.e. the higher score).
    """
    keep = batched_nms(boxes.float(), scores, labels, iou_threshold)
    box, kept = _same_class_pairs(labels, labels[keep])
    iou = _iou(boxes[box], boxes[keep][kept])
    best = torch.full((len(boxes),), -1.0, dtype=iou.dtype, device=iou.device)
    best = best.scatter_reduce(0, box, iou, reduce="amax")
    candidates = torch.where(iou == best[box], kept, len(keep))
    assignment = torch.full((len(boxes),), len(keep), dtype=kept.dtype, device=kept.device)
    return keep, assignment.scatter_reduce(0, box, candidates, reduce="amin")


def first_occurrences(keys: Tensor) -> Tensor:
    """Boolean [N]: True where ``keys[i]`` does not occur at an earlier position."""
    _, inverse = torch.unique(keys, return_inverse=True)
    positions = torch.arange(len(keys), device=keys.device)
    first = torch.full((int(inverse.max()) + 1 if len(keys) else 0,), len(keys), device=keys.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return first[inverse] == positions


def to_original_pixels(boxes: Tensor, image_size: Sequence[int], orig_size: Sequence[int]) -> Tensor:
    """Normalised x1y1x2y2 -> pixels of the original image, clipped, in detectron2's two steps."""
    (height, width), (orig_h, orig_w) = (int(s) for s in image_size), (int(s) for s in orig_size)
    to_image = boxes.new_tensor([width, height, width, height])
    to_original = boxes.new_tensor([orig_w / width, orig_h / height] * 2)
    bounds = boxes.new_tensor([orig_w, orig_h] * 2)
    return torch.clamp(boxes * to_image * to_original, min=torch.zeros_like(bounds), max=bounds)


def nonempty(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def rank_triplets(pairs: Tensor, rel_labels: Tensor, triplet_scores: Tensor, num_boxes: int,
                  max_triplets: int) -> Tensor:
    """Row order: by decreasing triplet score, first of each (subject, object, predicate), at most max."""
    order = torch.sort(triplet_scores, descending=True, stable=True).indices
    num_labels = int(rel_labels.max()) + 1 if len(rel_labels) else 1
    keys = (pairs[order, 0] * num_boxes + pairs[order, 1]) * num_labels + rel_labels[order]
    return order[first_occurrences(keys)][:max_triplets]


def scene_graph(best: Mapping[str, Tensor], boxes: Tensor, rel_prob: Tensor, image_size: Sequence[int],
                orig_size: Sequence[int], iou_threshold: float = 0.5, max_triplets: int = 300) -> dict[str, Tensor]:
    """One image of Q relation queries -> Predictions fields.

    Args:
        best: the best real class and its probability per query: ``sub_scores``, ``sub_labels``,
            ``obj_scores``, ``obj_labels``, ``rel_scores``, ``rel_labels``, each [Q].
        boxes: [2Q, 4] normalised x1y1x2y2, the subject boxes then the object boxes.
        rel_prob: [Q, R + 1] predicate softmax (last column = no relation).
    """
    num_queries = len(rel_prob)
    scores = torch.cat([best["sub_scores"], best["obj_scores"]])
    labels = torch.cat([best["sub_labels"], best["obj_labels"]])
    keep, assignment = merge_entities(boxes, scores, labels, iou_threshold)
    pairs = torch.stack([assignment[:num_queries], assignment[num_queries:]], dim=1)  # [Q, 2]
    triplet_scores = best["rel_scores"] * best["sub_scores"] * best["obj_scores"]
    rows = rank_triplets(pairs, best["rel_labels"], triplet_scores, len(keep), max_triplets=len(pairs))

    kept_boxes = to_original_pixels(boxes[keep], image_size, orig_size)
    valid = nonempty(kept_boxes)
    new_index = torch.cumsum(valid, 0) - 1
    rows = rows[valid[pairs[rows]].all(dim=1)][:max_triplets]
    return {
        "boxes": kept_boxes[valid], "labels": labels[keep][valid], "scores": scores[keep][valid],
        "rel_pairs": new_index[pairs[rows]], "rel_scores": rel_prob[rows],
        "triplet_scores": triplet_scores[rows],
    }


@torch.no_grad()
def postprocess_scene_graphs(outputs: Mapping[str, Tensor], image_sizes: Sizes, orig_sizes: Sizes,
                             image_ids: Sequence[int] | None = None, *, iou_threshold: float = 0.5,
                             max_triplets: int = 300) -> list[dict]:
    """Scene-graph model outputs -> one Predictions dict per image (CPU tensors, original-image pixels).

    EGTR's outputs (they hold ``pred_connectivity``) are scored as EGTR scores them
    (``itersg.models.relation.egtr_scoring.postprocess_egtr``, top-100 pairs); the rest of this docstring
    is IterativeSG's.

    Args:
        outputs: ``IterativeSG.forward`` outputs (the last layer's are used).
        image_sizes: (H, W) of each image as the model saw it (the target's ``size``), [B, 2].
        orig_sizes: (H, W) of each original image (the target's ``orig_size``), [B, 2].
        image_ids: stored as ``image_id``; default 0..B-1.

    Returns:
        per image ``image_id``, ``boxes`` [M, 4] x1y1x2y2, ``labels`` [M], ``scores`` [M], ``rel_pairs``
        [P, 2] (rows best first, P <= max_triplets), ``rel_scores`` [P, R + 1] (softmax, last =
        no relation) and ``triplet_scores`` [P].
    """
    if "pred_connectivity" in outputs:
        from itersg.models.relation.egtr_scoring import postprocess_egtr

        return postprocess_egtr(outputs, image_sizes, orig_sizes, image_ids)
    # Element-wise and per-row work is done for the whole batch at once (the same values as image by
    # image); what compares queries with each other (NMS, merging, ranking) runs per image.
    best = {}
    for role in ("sub", "obj", "rel"):
        prob = outputs[f"pred_{role}_logits"].float().softmax(-1)  # [B, Q, C + 1]
        best[f"{role}_scores"], best[f"{role}_labels"] = prob[..., :-1].max(-1)
    rel_probs = prob
    boxes = box_convert(torch.cat([outputs["pred_sub_boxes"], outputs["pred_obj_boxes"]], dim=1).float(),
                        "cxcywh", "xyxy")  # [B, 2Q, 4]
    results = []
    for i in range(len(boxes)):
        graph = scene_graph({key: value[i] for key, value in best.items()}, boxes[i], rel_probs[i], image_sizes[i],
                            orig_sizes[i], iou_threshold, max_triplets)
        image_id = int(image_ids[i]) if image_ids is not None else i
        results.append({"image_id": image_id, **{k: v.cpu() for k, v in graph.items()}})
    return results


@torch.no_grad()
def postprocess_detections(outputs: Mapping[str, Tensor], image_sizes: Sizes, orig_sizes: Sizes,
                           image_ids: Sequence[int] | None = None) -> list[dict]:
    """DETR outputs -> per image ``image_id``, ``boxes`` [N, 4] (original pixels), ``labels``, ``scores``.

    As detectron2's ``Detr.inference`` + ``detector_postprocess``: every query is a detection with its
    best real class; empty boxes after clipping are dropped.
    """
    scores, labels = outputs["pred_logits"].float().softmax(-1)[..., :-1].max(-1)
    results = []
    for i, boxes in enumerate(outputs["pred_boxes"].float()):
        boxes = to_original_pixels(box_convert(boxes, "cxcywh", "xyxy"), image_sizes[i], orig_sizes[i])
        valid = nonempty(boxes)
        image_id = int(image_ids[i]) if image_ids is not None else i
        results.append({"image_id": image_id, "boxes": boxes[valid].cpu(), "labels": labels[i][valid].cpu(),
                        "scores": scores[i][valid].cpu()})
    return results
