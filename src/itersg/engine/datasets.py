"""The datasets of a training run, built from ``params.data`` with the itersg.data package.

Scene-graph training uses the train split without images that have no relation (as IterativeSG);
DETR pretraining keeps them (``filter_empty_rels=False``, as a detector's pretraining does). Both
validate on the val split (the first ``data.num_val_images`` training-split images) with the test
transforms.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset


@dataclass
class Datasets:
    """Training and validation sets with what the model and loss need to know about them."""

    train: Dataset
    val: Dataset | None
    collate: Callable[[list], Any]
    num_classes: int
    num_predicates: int
    predicate_frequencies: Tensor | None  # [num_predicates], summing to 1 (train split)


def load_datasets(params: Mapping[str, Any], detection_only: bool) -> Datasets:
    """The VG150-format data under ``data.root`` (real or synthetic)."""
    from itersg.data.dataset import VG150Dataset, collate
    from itersg.data.transforms import eval_transforms, train_transforms
    from itersg.data.vg150 import VG150Index, load_vocabulary, predicate_frequencies

    data = params["data"]
    root, num_val = data["root"], data["num_val_images"]
    vocabulary = load_vocabulary(root)
    train_index = VG150Index(root, "train", num_val, filter_empty_rels=not detection_only)
    val_index = VG150Index(root, "val", num_val)
    train = VG150Dataset(train_index, train_transforms(data["train_min_sizes"], data["train_max_size"],
                                                       data["crop_resize_sizes"], data["crop_size"]))
    val = VG150Dataset(val_index, eval_transforms(data["test_size"], data["test_max_size"])) if len(val_index) else None
    frequencies = None
    if not detection_only:
        counts = torch.as_tensor(predicate_frequencies(root, num_val), dtype=torch.float64)
        frequencies = (counts / counts.sum().clamp(min=1)).float()
    return Datasets(train, val, collate, len(vocabulary.classes), len(vocabulary.predicates), frequencies)
