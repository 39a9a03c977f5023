"""Dataset targets (pixel xyxy boxes, relation rows) -> normalised per-branch matching targets.

A dataset target (the project contract) holds ``boxes`` [N, 4] x1y1x2y2 in pixels of the transformed
image, ``labels`` [N], ``relations`` [R, 3] (subject index, object index, predicate) and ``size``
(H, W) of the transformed image. Model boxes are (cx, cy, w, h) relative to that size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchvision.ops import box_convert

# A centre box thinner than this (pixels) is degenerate; the reference then uses the subject box.
DEGENERATE_BOX_PIXELS = 1e-5


def normalized_boxes(boxes: Tensor, size: Tensor) -> Tensor:
    """Pixel x1y1x2y2 [N, 4] -> (cx, cy, w, h) relative to ``size`` = (H, W)."""
    height, width = size.to(boxes).unbind(-1)
    scale = torch.stack([width, height, width, height])
    return box_convert(boxes / scale, "xyxy", "cxcywh")


def center_boxes(sub_boxes: Tensor, obj_boxes: Tensor, size: Tensor) -> Tensor:
    """The relation box of IterativeSG: from the subject's centre to the object's centre.

    Both inputs are pixel x1y1x2y2 [R, 4]; the result is normalised (cx, cy, w, h). Where the two
    centres share an x or a y (a degenerate box), the subject box is used instead, as the reference.
    """
    sub_centers = (sub_boxes[:, :2] + sub_boxes[:, 2:]) / 2
    obj_centers = (obj_boxes[:, :2] + obj_boxes[:, 2:]) / 2
    low, high = torch.minimum(sub_centers, obj_centers), torch.maximum(sub_centers, obj_centers)
    boxes = torch.cat([low, high], dim=-1)
    degenerate = ((high - low) <= DEGENERATE_BOX_PIXELS).any(-1)
    boxes[degenerate] = sub_boxes[degenerate]
    return normalized_boxes(boxes, size)


def relation_targets(targets: Sequence[Mapping[str, Tensor]]) -> list[dict[str, Tensor]]:
    """Per image: ``{sub,obj,rel}_labels`` [R] and ``{sub,obj,rel}_boxes`` [R, 4] (normalised cxcywh)."""
    prepared = []
    for target in targets:
        boxes, labels, relations = target["boxes"].float(), target["labels"], target["relations"]
        sub, obj = relations[:, 0], relations[:, 1]
        size = target["size"].to(boxes.device)
        prepared.append({
            "sub_labels": labels[sub], "sub_boxes": normalized_boxes(boxes[sub], size),
            "obj_labels": labels[obj], "obj_boxes": normalized_boxes(boxes[obj], size),
            "rel_labels": relations[:, 2], "rel_boxes": center_boxes(boxes[sub], boxes[obj], size),
        })
    return prepared


def detection_targets(targets: Sequence[Mapping[str, Tensor]]) -> list[dict[str, Tensor]]:
    """Per image: ``labels`` [N] and ``boxes`` [N, 4] normalised (cx, cy, w, h), for DETR."""
    return [{"labels": t["labels"], "boxes": normalized_boxes(t["boxes"].float(), t["size"])}
            for t in targets]
