"""EGTR's VG150 split: RelTR's conversion of the VG150 files, rebuilt from the project's h5.

EGTR (naver-ai/egtr) trains on RelTR's ``train/val/test.json`` + ``rel.json``, which RelTR made with
Neural-Motifs' loader (``dataloaders/visual_genome.py``: ``VG.splits(num_val_im=5000,
filter_duplicate_rels=True, filter_non_overlap=True)``) and ``np.unique`` over each image's triplets.
The rules, as that code has them:

- ``load_graphs``: an image is in split 0 (train/val) or 2 (test) by the h5's ``split`` flag, must have
  boxes, and (``filter_empty_rels``) relations; then val = the FIRST ``num_val_im`` of split 0 and
  train = the rest (``image_index[:num_val_im]`` / ``[num_val_im:]``), the same slice as the project's
  ``VG150Index`` (``data.num_val_images``).
- ``load_graphs`` with ``filter_non_overlap`` (train mode only): keep relations whose subject and object
  boxes (x1y1x2y2 at BOX_SCALE 1024, truncated to the h5's integers) have ``bbox_overlaps`` > 0, the
  Fast R-CNN IoU with +1 pixel widths; a training image with none left is dropped.
- ``VG.__getitem__`` with ``filter_duplicate_rels`` (train mode only) draws one predicate per (subject,
  object) pair with ``np.random.choice``; RelTR's script read ``train.relationships`` directly, so that
  draw never reached rel.json: its training triplets are ``np.unique`` rows (exact duplicates collapse,
  several predicates per pair stay, rows sorted).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from itersg.data.verify import check_structure
from itersg.data.vg150 import (
    BOX_SCALE,
    FLAT_ARRAYS,
    H5_FILE,
    INDEX_ARRAYS,
    SPLITS,
    VG150Index,
    load_image_data,
    split_rows,
    xyxy_from_boxes_1024,
)
from itersg.errors import UserError

Graph = tuple[np.ndarray, np.ndarray, np.ndarray]  # labels [M], boxes [M, 4], relations [R, 3]


@dataclass(frozen=True)
class EGTRFilters:
    """The filters of RelTR's conversion, applied to the TRAINING split only, as Neural-Motifs does.

    Attributes:
        filter_duplicate_rels: collapse repeated (subject, object, predicate) rows of an image (RelTR's
            ``np.unique``; several predicates per pair stay). Neural-Motifs' flag of this name instead
            draws one predicate per pair each time an image is loaded: that is ``one_predicate_per_pair``.
        filter_non_overlap: keep only relations whose boxes overlap at BOX_SCALE with the +1 pixel
            convention (Neural-Motifs' ``filter_non_overlap``).
        drop_images_without_relations: Neural-Motifs' ``filter_empty_rels``. It removes images without
            relations in the h5 from EVERY split (before the val slice, so it moves the val/train
            boundary), and images that the overlap filter leaves without relations from train.
        one_predicate_per_pair: Neural-Motifs' training-time draw of one predicate per (subject, object)
            pair, uniform over the pair's rows. Not in RelTR's rel.json, hence off for EGTR.
    """

    filter_duplicate_rels: bool = True
    filter_non_overlap: bool = True
    drop_images_without_relations: bool = True
    one_predicate_per_pair: bool = False


def overlapping(boxes_xyxy: np.ndarray, relations: np.ndarray) -> np.ndarray:
    """[R] bool: subject and object boxes overlap, i.e. Neural-Motifs' ``bbox_overlaps(...) > 0``.

    Args:
        boxes_xyxy: [N, 4] x1y1x2y2 at BOX_SCALE (integers, inclusive pixel ranges: width = x2 - x1 + 1).
        relations: [R, 3] (subject, object, predicate), image-local box indices.
    """
    sub, obj = boxes_xyxy[relations[:, 0]], boxes_xyxy[relations[:, 1]]
    width = np.minimum(sub[:, 2], obj[:, 2]) - np.maximum(sub[:, 0], obj[:, 0]) + 1
    height = np.minimum(sub[:, 3], obj[:, 3]) - np.maximum(sub[:, 1], obj[:, 1]) + 1
    return (width > 0) & (height > 0)  # intersection > 0; the union of two +1 boxes is always > 0


def one_predicate_per_pair(relations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One row per (subject, object) pair, drawn uniformly among the pair's rows (duplicates weigh more).

    Pairs keep the order of their first row, as Neural-Motifs' dict does. The reference draws with the
    global ``np.random.choice`` pair by pair; here ``rng`` draws one key per row: same distribution,
    another random stream.

    Args:
        relations: int [R, 3]. Returns: [P, 3], P = number of distinct pairs.
    """
    if len(relations) == 0:
        return relations
    _, first_row, group = np.unique(relations[:, :2], axis=0, return_index=True, return_inverse=True)
    group = group.reshape(-1)
    order = np.lexsort((-rng.random(len(relations)), group))  # by pair, highest random key first
    winners = order[np.r_[True, np.diff(group[order]) != 0]]
    return relations[winners[np.argsort(first_row)]]


def filter_relations(boxes_1024: np.ndarray, relations: np.ndarray, filters: EGTRFilters = EGTRFilters(),
                     rng: np.random.Generator | None = None) -> np.ndarray:
    """One training image's relations after the filters (non-overlap, then the draw, then np.unique).

    Args:
        boxes_1024: [N, 4] (cx, cy, w, h) at BOX_SCALE as the h5 stores them (its own dtype).
        relations: [R, 3] (subject, object, predicate), image-local; predicates 0- or 1-based alike.
        rng: needed only with ``filters.one_predicate_per_pair``.
    Returns:
        [R', 3] of the same dtype; sorted rows when ``filter_duplicate_rels`` (as rel.json).
    """
    relations = np.asarray(relations).reshape(-1, 3)
    if filters.filter_non_overlap and len(relations):
        relations = relations[overlapping(xyxy_from_boxes_1024(np.asarray(boxes_1024)), relations)]
    if filters.one_predicate_per_pair:
        if rng is None:
            raise UserError("one_predicate_per_pair draws at random: pass a numpy Generator (rng)")
        relations = one_predicate_per_pair(relations, rng)
    if filters.filter_duplicate_rels and len(relations):
        relations = np.unique(relations, axis=0)
    return relations


class _Annotations:
    """The VG150 h5 read once: per h5 row, raw boxes, 0-based labels and 0-based relations."""

    def __init__(self, root: str | Path) -> None:
        check_structure(root)
        with h5py.File(Path(root) / H5_FILE, "r") as h5:
            self.arrays = {name: h5[name][()] for name in INDEX_ARRAYS + FLAT_ARRAYS}

    def rows(self, split: str, num_val_images: int, filters: EGTRFilters) -> np.ndarray:
        a = self.arrays
        return split_rows(a["split"], a["img_to_first_box"], a["img_to_first_rel"], split, num_val_images,
                          filters.drop_images_without_relations)

    def image(self, row: int) -> Graph:
        """(boxes_1024 [N, 4] raw, labels [N] int64 0-based, relations [R, 3] int64 0-based)."""
        a = self.arrays
        first, last = int(a["img_to_first_box"][row]), int(a["img_to_last_box"][row])
        boxes, labels = a["boxes_1024"][first:last + 1], a["labels"][first:last + 1, 0].astype(np.int64) - 1
        r0, r1 = int(a["img_to_first_rel"][row]), int(a["img_to_last_rel"][row])
        if r0 < 0:
            return boxes, labels, np.zeros((0, 3), dtype=np.int64)
        pairs = a["relationships"][r0:r1 + 1].astype(np.int64) - first
        return boxes, labels, np.column_stack([pairs, a["predicates"][r0:r1 + 1, 0].astype(np.int64) - 1])


def _training_rows(annotations: _Annotations, num_val_images: int, filters: EGTRFilters,
                   rng: np.random.Generator | None) -> Iterator[tuple[int, np.ndarray]]:
    """(h5 row, filtered relations) of each image of EGTR's train split."""
    for row in annotations.rows("train", num_val_images, filters):
        boxes, _, relations = annotations.image(int(row))
        relations = filter_relations(boxes, relations, filters, rng)
        if len(relations) or not filters.drop_images_without_relations:
            yield int(row), relations


def _split_rows(annotations: _Annotations, split: str, num_val_images: int, filters: EGTRFilters) -> np.ndarray:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; use one of {list(SPLITS)}")
    if split != "train":
        return annotations.rows(split, num_val_images, filters).astype(np.int64)
    rng = np.random.default_rng(0)  # the draw never empties an image: membership does not depend on it
    return np.asarray([row for row, _ in _training_rows(annotations, num_val_images, filters, rng)], dtype=np.int64)


def egtr_split_image_indices(root: str | Path, split: str, num_val_images: int = 5000,
                             filters: EGTRFilters = EGTRFilters()) -> np.ndarray:
    """h5 rows (= ``VG150Index.rows`` numbering, image_data.json order without the corrupted images) of
    EGTR's ``split`` ("train", "val" or "test"), int64 [N], ascending.

    val and test are the project's ``VG150Index`` rows for the same ``num_val_images`` (no filter but
    ``drop_images_without_relations``); train also loses the images that the overlap filter empties.
    """
    return _split_rows(_Annotations(root), split, num_val_images, filters)


def egtr_split_counts(root: str | Path, num_val_images: int = 5000,
                      filters: EGTRFilters = EGTRFilters()) -> dict[str, int]:
    """Number of images of each of EGTR's splits: ``{"train": .., "val": .., "test": ..}``."""
    annotations = _Annotations(root)
    return {split: len(_split_rows(annotations, split, num_val_images, filters)) for split in SPLITS}


def egtr_training_graphs(root: str | Path, filters: EGTRFilters = EGTRFilters(), num_val_images: int = 5000,
                         rng: np.random.Generator | None = None) -> Iterator[Graph]:
    """EGTR's training graphs, lazily, in h5 row order: what ``vg_get_statistics`` counts over rel.json.

    Yields per image (labels int64 [M] 0..C-1, boxes float32 [M, 4] x1y1x2y2 in original pixels (scaled
    from BOX_SCALE by image_data.json's longer side, not clipped, as ``VG150Index.annotations``),
    relations int64 [R, 3] (subject, object, predicate 0..P-1) after ``filters``), the input of
    ``itersg.models.relation.egtr.predicate_statistics``. Its ``must_overlap`` then changes nothing with
    ``pixel_offset=1`` (the overlap filter already ran at BOX_SCALE and scaling keeps it), and its
    ``unique`` nothing with ``filter_duplicate_rels``. ``rng``: only for ``one_predicate_per_pair``.
    """
    annotations = _Annotations(root)
    images = load_image_data(root)
    for row, relations in _training_rows(annotations, num_val_images, filters, rng):
        boxes_1024, labels, _ = annotations.image(row)
        scale = max(int(images[row]["width"]), int(images[row]["height"])) / BOX_SCALE
        yield labels, (xyxy_from_boxes_1024(boxes_1024) * scale).astype(np.float32), relations


class EGTRTrainIndex(VG150Index):
    """EGTR's training split as a ``VG150Index``: its rows (``egtr_split_image_indices``) and each image's
    relations after ``filters`` (``filter_relations``) instead of the project's per-load predicate draw."""

    def __init__(self, root: str | Path, num_val_images: int = 5000, filters: EGTRFilters = EGTRFilters()):
        super().__init__(root, "train", num_val_images, filter_duplicate_rels=False,
                         rows=egtr_split_image_indices(root, "train", num_val_images, filters))
        self.filters = filters

    def annotations(self, i: int, generator: Any = None) -> dict[str, np.ndarray]:
        """As ``VG150Index.annotations``, relations filtered; ``one_predicate_per_pair`` draws from a numpy
        generator seeded from ``generator`` (a ``torch.Generator``, else the torch RNG), so a training run's
        draws repeat with its seed."""
        annotation = super().annotations(i)
        first, last = int(self.first_box[i]), int(self.last_box[i])
        rng = None
        if self.filters.one_predicate_per_pair:
            import torch

            rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=generator)))
        annotation["relations"] = filter_relations(self._rows("boxes_1024", first, last), annotation["relations"],
                                                   self.filters, rng)
        return annotation
