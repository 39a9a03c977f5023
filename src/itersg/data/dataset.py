"""A torch Dataset over one VG150 split: image tensor + scene-graph target."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision.transforms.v2 as T
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import pil_to_tensor

from itersg.data.transforms import apply
from itersg.data.vg150 import VG150Index
from itersg.errors import UserError


class VG150Dataset(Dataset):
    """Items are ``(image, target)``.

    image: uint8 [3, H, W] RGB after ``transform``. target: ``boxes`` float32 [N, 4] x1y1x2y2 pixels of the
    transformed image, ``labels`` int64 [N] (0-based), ``relations`` int64 [R, 3] (subject, object,
    predicate), ``image_id`` int, ``orig_size`` int64 [2] (H, W) of the decoded image, ``size`` int64 [2].
    """

    def __init__(self, index: VG150Index, transform: T.Transform | None = None) -> None:
        self.index = index
        self.transform = transform

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        path = self.index.image_path(i)
        try:
            with Image.open(path) as file:
                image = pil_to_tensor(file.convert("RGB"))
        except OSError as err:
            raise UserError(f"{path}: cannot decode the image ({err}); download it again") from None
        annotation = self.index.annotations(i)
        boxes = torch.from_numpy(annotation["boxes"])
        height, width = image.shape[-2:]
        listed = (int(self.index.heights[i]), int(self.index.widths[i]))
        if (height, width) != listed:  # image_data.json has some wrong sizes: trust the pixels
            boxes = boxes * torch.tensor([width / listed[1], height / listed[0]] * 2)
        image, boxes, labels, relations = apply(
            self.transform, image, boxes, torch.from_numpy(annotation["labels"]),
            torch.from_numpy(annotation["relations"]))
        target = {
            "boxes": boxes.float(), "labels": labels, "relations": relations,
            "image_id": int(self.index.image_ids[i]),
            "orig_size": torch.tensor([height, width]), "size": torch.tensor(image.shape[-2:]),
        }
        return image, target


def collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Keep images of different sizes as a list; the model pads them."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
