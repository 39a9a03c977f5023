"""The datasets of a training run, built from ``params.data`` with the itersg.data package.

Scene-graph training uses the train split without images that have no relation (as IterativeSG);
DETR pretraining keeps them (``filter_empty_rels=False``, as a detector's pretraining does). Both
validate on the val split (the first ``data.num_val_images`` training-split images, counted under the
same rule as the training images, so that no image is in both) with the test transforms.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
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
    # [num_predicates] ``predicate_count`` of the dicts file (SpeaQ's predicate groups), None if it has none
    predicate_counts: Tensor | None = None


def load_datasets(params: Mapping[str, Any], detection_only: bool, egtr_filters: Any = None) -> Datasets:
    """The VG150-format data under ``data.root`` (real or synthetic); with ``egtr_filters``
    (``itersg.data.egtr_split.EGTRFilters``) the training split is EGTR's (``EGTRTrainIndex``)."""
    from itersg.data.dataset import VG150Dataset, collate
    from itersg.data.egtr_split import EGTRTrainIndex
    from itersg.data.transforms import eval_transforms, train_transforms
    from itersg.data.vg150 import VG150Index, load_vocabulary, predicate_frequencies

    data = params["data"]
    root, num_val = data["root"], data["num_val_images"]
    vocabulary = load_vocabulary(root)
    if egtr_filters is not None:
        train_index = EGTRTrainIndex(root, num_val, egtr_filters)
    else:
        train_index = VG150Index(root, "train", num_val, filter_empty_rels=not detection_only)
    # the same rule as the training split's, so that the first images form val and none is in both
    val_index = VG150Index(root, "val", num_val, filter_empty_rels=not detection_only)
    train = VG150Dataset(train_index, train_transforms(data["train_min_sizes"], data["train_max_size"],
                                                       data["crop_resize_sizes"], data["crop_size"]))
    val = VG150Dataset(val_index, eval_transforms(data["test_size"], data["test_max_size"])) if len(val_index) else None
    frequencies = None
    if not detection_only:
        counts = torch.as_tensor(predicate_frequencies(root, num_val), dtype=torch.float64)
        frequencies = (counts / counts.sum().clamp(min=1)).float()
    return Datasets(train, val, collate, len(vocabulary.classes), len(vocabulary.predicates), frequencies,
                    predicate_counts(root, vocabulary.predicates))


def predicate_counts(root: str, predicates: Sequence[str]) -> Tensor | None:
    """The dicts file's ``predicate_count`` [P] in predicate order; None without one.

    SpeaQ groups predicates by these counts: for VG150 they are the table hard-coded in the official
    SpeaQ matcher (on 712,409, has 277,936, ...; 2,046,006 in all).
    """
    from itersg.data.vg150 import DICTS_FILE

    with open(Path(root) / DICTS_FILE) as file:
        counts = json.load(file).get("predicate_count")
    if not isinstance(counts, Mapping) or set(counts) != set(predicates):
        return None
    return torch.tensor([int(counts[name]) for name in predicates], dtype=torch.int64)
