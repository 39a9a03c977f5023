"""Image + box transforms of IterativeSG (its detectron2 DETR mapper), on torchvision.transforms.v2.

Training: random horizontal flip (boxes are mirrored, predicates are left as they are, like the
reference's ``RandomFlip``); then with probability 0.5 a resize of the shortest side to one of
``min_sizes`` (longest side at most ``max_size``), otherwise a resize to one of
``crop_resize_sizes``, a random crop with sides in ``crop_size``, and the same multi-scale resize.
Test: shortest side ``test_size``, longest at most ``test_max_size``. Output sizes are rounded as
detectron2's ``ResizeShortestEdge`` rounds them. Boxes move with the image
(``tv_tensors.BoundingBoxes``); ``apply`` then clips them to the image and drops boxes whose width or
height is not above 1e-5 px (detectron2's ``filter_empty_instances``), with the relations that use them.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from typing import Any

import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as F
from torchvision import tv_tensors

EMPTY_BOX_THRESHOLD = 1e-5  # px; detectron2 Boxes.nonempty(threshold) as the reference mapper uses it


def shortest_edge_size(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """(new_height, new_width) with the shortest side ``short`` and the longest at most ``max_size``.

    Rounded half up, as detectron2's ``ResizeShortestEdge.get_output_shape``.
    """
    scale = short / min(height, width)
    new_h, new_w = (short, scale * width) if height < width else (scale * height, short)
    if max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


class ResizeShortestEdge(T.Transform):
    """Resize so that the shortest side is a random choice of ``sizes`` (pixels), longest <= ``max_size``."""

    def __init__(self, sizes: Sequence[int], max_size: int = sys.maxsize) -> None:
        super().__init__()
        self.sizes, self.max_size = list(sizes), max_size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = T.query_size(flat_inputs)
        return {"size": list(shortest_edge_size(height, width, random.choice(self.sizes), self.max_size))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, size=params["size"], antialias=True)


class RandomSizeCrop(T.Transform):
    """Crop a random ``h x w`` window, each side drawn from [min_size, max_size] (capped by the image).

    detectron2's ``RandomCrop("absolute_range", (min_size, max_size))``.
    """

    def __init__(self, min_size: int, max_size: int) -> None:
        super().__init__()
        self.min_size, self.max_size = min_size, max_size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = T.query_size(flat_inputs)
        crop_h = random.randint(min(self.min_size, height), min(self.max_size, height))
        crop_w = random.randint(min(self.min_size, width), min(self.max_size, width))
        return {"top": random.randint(0, height - crop_h), "left": random.randint(0, width - crop_w),
                "height": crop_h, "width": crop_w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


def train_transforms(min_sizes: Sequence[int], max_size: int, crop_resize_sizes: Sequence[int],
                     crop_size: Sequence[int]) -> T.Transform:
    """The reference training augmentation; all sizes in pixels."""
    crop_path = T.Compose([
        ResizeShortestEdge(crop_resize_sizes),
        RandomSizeCrop(crop_size[0], crop_size[1]),
        ResizeShortestEdge(min_sizes, max_size),
    ])
    return T.Compose([
        T.RandomHorizontalFlip(0.5),
        T.RandomChoice([ResizeShortestEdge(min_sizes, max_size), crop_path]),
    ])


def eval_transforms(size: int, max_size: int) -> T.Transform:
    """Shortest side ``size``, longest side at most ``max_size`` (pixels)."""
    return ResizeShortestEdge([size], max_size)


def apply(transform: T.Transform | None, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
          relations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Transform an image with its scene graph; boxes are clipped and empty ones dropped afterwards.

    Args:
        image: uint8 [3, H, W]. boxes: float [N, 4] x1y1x2y2 pixels. labels: int64 [N].
        relations: int64 [R, 3] (subject, object, predicate), indices into ``boxes``.
    Returns:
        image [3, H', W'], boxes float32 [N', 4], labels [N'], relations [R', 3] re-indexed to the kept
        boxes (a relation that uses a dropped box is dropped).
    """
    height, width = image.shape[-2:]
    target = {
        "boxes": tv_tensors.BoundingBoxes(boxes.float(), format="XYXY", canvas_size=(height, width)),
        "labels": labels,
        "box_ids": torch.arange(len(boxes)),  # a transform that removes boxes must remove these too
    }
    if transform is not None:
        image, target = transform(tv_tensors.Image(image), target)
    height, width = image.shape[-2:]
    out_boxes = target["boxes"].as_subclass(torch.Tensor).clone()
    out_boxes[:, 0::2] = out_boxes[:, 0::2].clamp(0, width)
    out_boxes[:, 1::2] = out_boxes[:, 1::2].clamp(0, height)
    sides = out_boxes[:, 2:] - out_boxes[:, :2]
    keep = (sides > EMPTY_BOX_THRESHOLD).all(dim=1)
    kept_ids = target["box_ids"][keep]
    new_index = torch.full((len(boxes),), -1, dtype=torch.long)
    new_index[kept_ids] = torch.arange(len(kept_ids))
    sub, obj = new_index[relations[:, 0]], new_index[relations[:, 1]]
    valid = (sub >= 0) & (obj >= 0)
    relations = torch.stack([sub[valid], obj[valid], relations[valid, 2]], dim=1)
    return image.as_subclass(torch.Tensor), out_boxes[keep], target["labels"][keep], relations
