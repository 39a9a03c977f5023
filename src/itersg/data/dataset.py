"""A torch Dataset over one VG150 split: image tensor + scene-graph target."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision.transforms.v2 as T
from torch.utils.data import Dataset

from itersg.data.image_io import read_image
from itersg.data.transforms import apply
from itersg.data.vg150 import VG150Index


class VG150Dataset(Dataset):
    """Items are ``(image, target)``.

    image: uint8 [3, H, W] RGB after ``transform``. target: ``boxes`` float32 [N, 4] x1y1x2y2 pixels of the
    transformed image, ``labels`` int64 [N] (0-based), ``relations`` int64 [R, 3] (subject, object,
    predicate), ``image_id`` int, ``orig_size`` int64 [2] (H, W) of the decoded image, ``size`` int64 [2].

    Boxes are scaled from ``image_data.json``'s size even if the decoded image differs (the reference
    does the same: its mapper only replaces the recorded size by the decoded one).
    """

    def __init__(self, index: VG150Index, transform: T.Transform | None = None) -> None:
        self.index = index
        self.transform = transform

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        image = read_image(self.index.image_path(i))
        annotation = self.index.annotations(i)
        height, width = image.shape[-2:]
        image, boxes, labels, relations = apply(
            self.transform, image, torch.from_numpy(annotation["boxes"]), torch.from_numpy(annotation["labels"]),
            torch.from_numpy(annotation["relations"]))
        target = {
            "boxes": boxes, "labels": labels, "relations": relations,
            "image_id": int(self.index.image_ids[i]),
            "orig_size": torch.tensor([height, width]), "size": torch.tensor(image.shape[-2:]),
        }
        return image, target


def collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Keep images of different sizes as a list; the model pads them."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


collate_fn = collate  # the name DataLoader's argument suggests
