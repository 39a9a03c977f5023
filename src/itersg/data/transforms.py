"""Image + box transforms of IterativeSG (DETR recipe), on torchvision.transforms.v2.

Training: random horizontal flip; then with probability 0.5 a multi-scale resize of the shortest side,
otherwise resize to one of ``crop_resize_sizes``, a random crop, and the multi-scale resize. Test:
shortest side ``test_size``, longest at most ``test_max_size``. Boxes move with the image
(``tv_tensors.BoundingBoxes``); boxes emptied by a crop are dropped with the relations that use them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as F
from torchvision import tv_tensors
from torchvision.transforms.v2._utils import query_size


class RandomSizeCrop(T.Transform):
    """Crop a random ``h x w`` window with each side drawn from [min_size, max_size] (capped by the image)."""

    def __init__(self, min_size: int, max_size: int) -> None:
        super().__init__()
        self.min_size, self.max_size = min_size, max_size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = query_size(flat_inputs)
        crop_h = random.randint(min(self.min_size, height), min(self.max_size, height))
        crop_w = random.randint(min(self.min_size, width), min(self.max_size, width))
        return {"top": random.randint(0, height - crop_h), "left": random.randint(0, width - crop_w),
                "height": crop_h, "width": crop_w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


def _labels_and_box_ids(inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    target = inputs[1]
    return target["labels"], target["box_ids"]


def train_transforms(min_sizes: Sequence[int], max_size: int, crop_resize_sizes: Sequence[int],
                     crop_size: Sequence[int]) -> T.Transform:
    """The reference training augmentation; sizes in pixels."""
    multi_scale = T.RandomShortestSize(list(min_sizes), max_size)
    crop_path = T.Compose([
        T.RandomShortestSize(list(crop_resize_sizes)),
        RandomSizeCrop(crop_size[0], crop_size[1]),
        T.RandomShortestSize(list(min_sizes), max_size),
    ])
    return T.Compose([
        T.RandomHorizontalFlip(0.5),
        T.RandomChoice([multi_scale, crop_path]),
        T.ClampBoundingBoxes(),
        T.SanitizeBoundingBoxes(min_size=1.0, labels_getter=_labels_and_box_ids),
    ])


def eval_transforms(size: int, max_size: int) -> T.Transform:
    """Shortest side ``size``, longest side at most ``max_size`` (pixels)."""
    return T.Compose([T.Resize(size, max_size=max_size), T.ClampBoundingBoxes()])


def apply(transform: T.Transform | None, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
          relations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Transform an image [3, H, W] with its boxes [N, 4] xyxy; returns image, boxes, labels, relations.

    Relations [R, 3] are re-indexed to the boxes that survive (a relation to a dropped box is dropped).
    """
    if transform is None:
        return image, boxes, labels, relations
    height, width = image.shape[-2:]
    target = {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
        "labels": labels,
        "box_ids": torch.arange(len(boxes)),
    }
    image, target = transform(tv_tensors.Image(image), target)
    new_index = torch.full((len(boxes),), -1, dtype=torch.long)
    new_index[target["box_ids"]] = torch.arange(len(target["box_ids"]))
    sub, obj = new_index[relations[:, 0]], new_index[relations[:, 1]]
    keep = (sub >= 0) & (obj >= 0)
    relations = torch.stack([sub[keep], obj[keep], relations[keep, 2]], dim=1)
    return image.as_subclass(torch.Tensor), target["boxes"].as_subclass(torch.Tensor), target["labels"], relations
