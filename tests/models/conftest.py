"""Shared fixtures of the model tests: small configurations and synthetic scenes."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

# A small configuration of the same classes (what the demo uses, plus 3 decoder layers).
SMALL = {"hidden_dim": 32, "nheads": 4, "enc_layers": 1, "dec_layers": 3, "dim_feedforward": 64,
         "num_queries": 8, "backbone": {"small": True}}

COLOURS = torch.tensor([[230, 40, 40], [40, 200, 40], [40, 60, 230], [230, 220, 40]], dtype=torch.uint8)
PREDICATES = ("left of", "right of", "above", "below")


@pytest.fixture
def small_overrides() -> dict:
    return {**SMALL, "backbone": dict(SMALL["backbone"])}


def _predicate(sub_box: torch.Tensor, obj_box: torch.Tensor) -> int:
    """0 left of, 1 right of, 2 above, 3 below: the dominant axis of the centre offset."""
    dx, dy = ((obj_box[:2] + obj_box[2:]) / 2 - (sub_box[:2] + sub_box[2:]) / 2).tolist()
    if abs(dx) >= abs(dy):
        return 0 if dx > 0 else 1
    return 2 if dy > 0 else 3


def make_scenes(num_images: int, size: int = 96, seed: int = 0) -> list[tuple[torch.Tensor, dict]]:
    """Images of 2-3 non-overlapping coloured rectangles (class = colour) on grey, with one geometric
    predicate for every pair (i, j), i < j; targets follow the dataset contract."""
    g = torch.Generator().manual_seed(seed)
    scenes = []
    for image_id in range(num_images):
        image = torch.full((3, size, size), 110, dtype=torch.uint8)
        count = int(torch.randint(2, 4, (1,), generator=g))
        boxes, labels = [], []
        while len(boxes) < count:
            w, h = torch.randint(18, 36, (2,), generator=g).tolist()
            x = int(torch.randint(0, size - w, (1,), generator=g))
            y = int(torch.randint(0, size - h, (1,), generator=g))
            box = torch.tensor([x, y, x + w, y + h], dtype=torch.float32)
            if boxes and box_iou(box[None], torch.stack(boxes)).max() > 0:
                continue
            label = int(torch.randint(0, len(COLOURS), (1,), generator=g))
            image[:, y:y + h, x:x + w] = COLOURS[label][:, None, None]
            boxes.append(box)
            labels.append(label)
        pairs = [(i, j) for i in range(count) for j in range(i + 1, count)]
        relations = [[i, j, _predicate(boxes[i], boxes[j])] for i, j in pairs]
        scenes.append((image, {
            "boxes": torch.stack(boxes), "labels": torch.tensor(labels), "relations": torch.tensor(relations),
            "image_id": image_id, "size": torch.tensor([size, size]), "orig_size": torch.tensor([size, size]),
        }))
    return scenes


@pytest.fixture
def scenes():
    """Factory: ``scenes(num_images, size=96, seed=0)``."""
    return make_scenes
