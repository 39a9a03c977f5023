"""The VG150 files (Xu et al. 2017 split) as IterativeSG reads them.

Conventions (spec-iterativesg §1): h5 row ``i`` is the ``i``-th entry of ``image_data.json`` after
dropping the corrupted image ids; labels and predicates are 1-based in the files and 0-based here
(objects 0..C-1 with C = "no object", predicates 0..P-1 with P = "no relation"); ``boxes_1024`` is
(cx, cy, w, h) at longer side 1024 and becomes x1y1x2y2 in original pixels exactly as the reference
converts it (in the h5's own dtype, so integer files truncate x1/y1 toward zero).

Training relations: the reference's mapper (``data/dataset_mapper.py``) groups an image's relations
by (subject, object) pair and keeps ONE predicate per pair, drawn at random each time the image is
loaded; spec-iterativesg §1 says all predicates of a pair are kept, the code wins
(``sample_predicate_per_pair``). Validation/test keep every row, duplicates included, and the
predicate frequencies (alpha/beta reweighting) count every training row, as the reference's
``get_statistics`` does.

Opening an index first runs the fast validator (``verify.check_structure``: once per process for the
same files), which reads every array once; the index then keeps only the small per-image arrays, and
boxes, labels and relations of an image are read on demand from an h5 handle that each process
(DataLoader worker) opens lazily.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from itersg.errors import UserError

if TYPE_CHECKING:  # torch is imported only where needed: opening an index stays light
    import torch

CORRUPTED_IMAGE_IDS = (1592, 1722, 4616, 4617)
BOX_SCALE = 1024
H5_FILE = "VG-SGG-with-attri.h5"
DICTS_FILE = "VG-SGG-dicts-with-attri.json"
IMAGE_DATA_FILE = "image_data.json"
ZERO_SHOT_FILE = "zeroshot_triplet.pytorch"
IMAGE_DIRS = ("VG_100K", "VG_100K_2")
SPLITS = ("train", "val", "test")
INDEX_ARRAYS = ("split", "img_to_first_box", "img_to_last_box", "img_to_first_rel", "img_to_last_rel")
FLAT_ARRAYS = ("boxes_1024", "labels", "relationships", "predicates")


@dataclass(frozen=True)
class Vocabulary:
    """Object class and predicate names, 0-based (index i = file index i + 1)."""

    classes: tuple[str, ...]
    predicates: tuple[str, ...]


def load_vocabulary(root: str | Path) -> Vocabulary:
    """Class and predicate names from ``VG-SGG-dicts-with-attri.json``, sorted by their 1-based index."""
    path = Path(root) / DICTS_FILE
    dicts = _read_json(path)
    try:
        classes = sorted(dicts["label_to_idx"], key=lambda name: dicts["label_to_idx"][name])
        predicates = sorted(dicts["predicate_to_idx"], key=lambda name: dicts["predicate_to_idx"][name])
    except (KeyError, TypeError):
        raise UserError(f"{path}: missing 'label_to_idx' or 'predicate_to_idx'; use the VG150 dicts file") from None
    return Vocabulary(tuple(classes), tuple(predicates))


def _read_json(path: Path) -> Any:
    try:
        with open(path) as file:
            return json.load(file)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found; run `itersg fetch vg` or check data.root") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); download it again") from None


def load_image_data(root: str | Path) -> list[dict]:
    """``image_data.json`` without the corrupted images: entry i describes h5 row i."""
    path = Path(root) / IMAGE_DATA_FILE
    entries = _read_json(path)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UserError(f"{path}: expected a JSON list of image records; run `itersg data verify`")
    return [e for e in entries if e.get("image_id") not in CORRUPTED_IMAGE_IDS]


def load_zero_shot(root: str | Path) -> np.ndarray:
    """The zero-shot triplets of the VG150 folder ``root`` (``read_zero_shot`` of its file)."""
    return read_zero_shot(Path(root) / ZERO_SHOT_FILE)


def read_zero_shot(path: str | Path) -> np.ndarray:
    """A zero-shot triplet file (a torch-saved int64 tensor [Z, 3]) as a NumPy array, 1-based as stored
    (subject class, object class, predicate); ``zero_based`` converts them to the model's ids."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"zero-shot triplet file {path} does not exist; pass --zero-shot FILE or fetch "
                        f"the data (zeroshot_triplet.pytorch)")
    try:
        triplets = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt file, some with messages of many lines
        raise UserError(f"{path}: not a file of zero-shot triplets saved by torch ({type(err).__name__}); "
                        "fetch zeroshot_triplet.pytorch again") from None
    if not isinstance(triplets, torch.Tensor) or triplets.ndim != 2 or triplets.shape[1] != 3:
        found = f"shape {tuple(triplets.shape)}" if isinstance(triplets, torch.Tensor) else type(triplets).__name__
        raise UserError(f"{path}: zero-shot triplets must be a tensor of shape (Z, 3), found {found}; fetch "
                        "zeroshot_triplet.pytorch again")
    triplets = triplets.long().numpy()
    if triplets.size and triplets.min() < 1:
        raise UserError(f"{path}: zero-shot triplets must be 1-based (found {triplets.min()}); fetch the "
                        f"file again")
    return triplets


def zero_based(triplets: np.ndarray) -> np.ndarray:
    """1-based (subject class, object class, predicate) rows, as in the file, to the model's 0-based ids."""
    return np.asarray(triplets, dtype=np.int64) - 1


def sample_predicate_per_pair(relations: np.ndarray, generator: torch.Generator | None = None) -> np.ndarray:
    """IterativeSG's training-time duplicate filter: one relation per (subject, object) pair.

    The predicate is drawn uniformly among the pair's annotated rows, so a predicate annotated twice is
    twice as likely (the reference mapper's ``np.random.choice`` over the pair's list). Pairs keep the
    order of their first row. Uses the torch RNG, which the training loop seeds per sample.

    Args:
        relations: int64 [R, 3] (subject, object, predicate).
    Returns:
        int64 [P, 3], P = number of distinct (subject, object) pairs.
    """
    import torch

    if len(relations) == 0:
        return relations
    _, first_row, group = np.unique(relations[:, :2], axis=0, return_index=True, return_inverse=True)
    group = group.reshape(-1)
    keys = torch.rand(len(relations), generator=generator, dtype=torch.float64).numpy()
    order = np.lexsort((-keys, group))  # by pair, then the highest random key first
    winners = order[np.r_[True, np.diff(group[order]) != 0]]  # one row per pair, pairs in sorted order
    return relations[winners[np.argsort(first_row)]]


def xyxy_from_boxes_1024(boxes: np.ndarray) -> np.ndarray:
    """Reference conversion of (cx, cy, w, h) to (x1, y1, x2, y2), in the array's own dtype."""
    boxes = boxes.copy()
    boxes[:, :2] = boxes[:, :2] - boxes[:, 2:] / 2
    boxes[:, 2:] = boxes[:, :2] + boxes[:, 2:]
    return boxes


def split_rows(split_flags: np.ndarray, first_box: np.ndarray, first_rel: np.ndarray, split: str,
               num_val_images: int, filter_empty_rels: bool = True) -> np.ndarray:
    """h5 rows of ``split``: split 0 (train/val) or 2 (test), with boxes (and relations)."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; use one of {list(SPLITS)}")
    mask = (split_flags == (2 if split == "test" else 0)) & (first_box >= 0)
    if filter_empty_rels:
        mask &= first_rel >= 0
    rows = np.flatnonzero(mask)
    if split == "val":
        return rows[:num_val_images]
    if split == "train":
        return rows[num_val_images:]
    return rows


class VG150Index:
    """One split of VG150: image ids, sizes and annotations read on demand.

    Args:
        root: folder with the VG150 files and the image folder(s).
        split: "train", "val" or "test".
        num_val_images: the first N rows of split 0 form "val", the rest "train".
        filter_empty_rels: drop images without relations (IterativeSG does; DETR pretraining need not).
        filter_duplicate_rels: keep one randomly drawn relation per (subject, object) pair, as the
            reference's training mapper does (``sample_predicate_per_pair``); default: train only.
        rows: the h5 rows of the split when another rule chose them (EGTR's training split); default
            ``split_rows``.
    """

    def __init__(self, root: str | Path, split: str, num_val_images: int = 5000, *,
                 filter_empty_rels: bool = True, filter_duplicate_rels: bool | None = None,
                 rows: np.ndarray | None = None) -> None:
        from itersg.data.verify import check_structure  # verify imports this module

        check_structure(root)  # one clear error for a broken file, before anything reads it
        self.root = Path(root)
        self.split = split
        self.filter_duplicate_rels = split == "train" if filter_duplicate_rels is None else filter_duplicate_rels
        self.h5_path = self.root / H5_FILE
        with h5py.File(self.h5_path, "r") as h5:  # the small per-image arrays; the flat ones stay on disk
            arrays = {name: h5[name][:] for name in INDEX_ARRAYS}
        if rows is None:
            rows = split_rows(arrays["split"], arrays["img_to_first_box"], arrays["img_to_first_rel"], split,
                              num_val_images, filter_empty_rels)
        self.rows = rows
        self.first_box = arrays["img_to_first_box"][self.rows]
        self.last_box = arrays["img_to_last_box"][self.rows]
        self.first_rel = arrays["img_to_first_rel"][self.rows]
        self.last_rel = arrays["img_to_last_rel"][self.rows]
        images = load_image_data(self.root)
        self.image_ids = np.array([images[r]["image_id"] for r in self.rows], dtype=np.int64)
        self.widths = np.array([images[r]["width"] for r in self.rows], dtype=np.int64)
        self.heights = np.array([images[r]["height"] for r in self.rows], dtype=np.int64)
        self._h5: h5py.File | None = None
        self._h5_pid = -1
        self._in_memory: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_h5"], state["_h5_pid"] = None, -1  # every DataLoader worker opens its own handle
        return state

    @property
    def h5(self) -> h5py.File:
        """The h5 file, opened on first use in each process (a forked worker never reuses the parent's)."""
        if self._h5 is None or self._h5_pid != os.getpid():
            self._h5, self._h5_pid = h5py.File(self.h5_path, "r"), os.getpid()
        return self._h5

    def load_into_memory(self) -> VG150Index:
        """Read the flat box/label/relation arrays once (~60 MB for VG150): faster for a full pass."""
        self._in_memory = {name: self.h5[name][()] for name in FLAT_ARRAYS}
        return self

    def _rows(self, name: str, first: int, last: int) -> np.ndarray:
        source = self._in_memory if self._in_memory is not None else self.h5
        return source[name][first:last + 1]

    def image_path(self, i: int) -> Path:
        """``{image_id}.jpg`` in VG_100K, else in VG_100K_2 (the two unmerged image zips)."""
        image_id = int(self.image_ids[i])
        for folder in IMAGE_DIRS:
            path = self.root / folder / f"{image_id}.jpg"
            if path.is_file():
                return path
        raise UserError(f"{self.root}/VG_100K/{image_id}.jpg: image missing; put both VG image folders "
                        "in place (itersg fetch vg) and run `itersg data verify`")

    def annotations(self, i: int, generator: torch.Generator | None = None) -> dict[str, np.ndarray]:
        """Ground truth of image ``i`` without decoding it (nothing but h5 slices is read).

        Returns boxes float32 (N, 4) x1y1x2y2 in original pixels (scale from image_data.json), labels
        int64 (N,) 0-based, relations int64 (R, 3) (subject, object, predicate) image-local and 0-based.
        With ``filter_duplicate_rels`` the relations are drawn (``generator``, else the torch RNG).
        """
        first, last = int(self.first_box[i]), int(self.last_box[i])
        boxes = xyxy_from_boxes_1024(self._rows("boxes_1024", first, last))
        scale = max(int(self.widths[i]), int(self.heights[i])) / BOX_SCALE
        boxes = (boxes * scale).astype(np.float32)
        labels = self._rows("labels", first, last)[:, 0].astype(np.int64) - 1
        relations = np.zeros((0, 3), dtype=np.int64)
        if self.first_rel[i] >= 0:
            r0, r1 = int(self.first_rel[i]), int(self.last_rel[i])
            pairs = self._rows("relationships", r0, r1).astype(np.int64) - first
            predicates = self._rows("predicates", r0, r1)[:, 0].astype(np.int64) - 1
            relations = np.column_stack([pairs, predicates])
            if self.filter_duplicate_rels:
                relations = sample_predicate_per_pair(relations, generator)
        return {"boxes": boxes, "labels": labels, "relations": relations}


def clip_and_drop_empty(boxes: np.ndarray, relations: np.ndarray, width: int, height: int,
                        min_size: float = 1e-5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip to [0, W] x [0, H]; drop boxes with a side <= ``min_size`` and relations touching them.

    Returns (kept box indices, clipped kept boxes, remapped relations), as IterativeSG's test mapper.
    """
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    keep = np.flatnonzero((clipped[:, 2] - clipped[:, 0] > min_size) & (clipped[:, 3] - clipped[:, 1] > min_size))
    new_index = np.full(len(boxes), -1, dtype=np.int64)
    new_index[keep] = np.arange(len(keep))
    relations = relations[(new_index[relations[:, 0]] >= 0) & (new_index[relations[:, 1]] >= 0)]
    relations = np.column_stack([new_index[relations[:, 0]], new_index[relations[:, 1]], relations[:, 2]])
    return keep, clipped[keep], relations.astype(np.int64).reshape(-1, 3)


def load_split_ground_truth(root: str | Path, split: str, num_val_images: int = 5000) -> dict[int, dict]:
    """Evaluation ground truth: ``{image_id: {"boxes", "labels", "relations", "width", "height"}}``.

    Boxes are original pixels clipped to [0, W] x [0, H] with empty boxes and their relations dropped,
    as IterativeSG's evaluator sees them; duplicate relations are kept (they count in the recall).
    """
    index = VG150Index(root, split, num_val_images, filter_duplicate_rels=False).load_into_memory()
    return {int(image_id): image_ground_truth(index, i) for i, image_id in enumerate(index.image_ids)}


def image_ground_truth(index: VG150Index, i: int) -> dict[str, Any]:
    """The evaluation ground truth of image ``i`` of ``index`` (an index without duplicate filtering).

    ``{"boxes" [N, 4] float32 clipped original pixels, "labels" [N], "relations" [G, 3], "width", "height"}``.
    """
    annotation = index.annotations(i)
    width, height = int(index.widths[i]), int(index.heights[i])
    keep, boxes, relations = clip_and_drop_empty(annotation["boxes"], annotation["relations"], width, height)
    return {"boxes": boxes, "labels": annotation["labels"][keep], "relations": relations,
            "width": width, "height": height}


def predicate_frequencies(root: str | Path, num_val_images: int = 5000) -> np.ndarray:
    """Relation count per predicate (0-based) in the training split, duplicates included."""
    index = VG150Index(root, "train", num_val_images, filter_duplicate_rels=False)
    with h5py.File(index.h5_path, "r") as h5:
        predicates = h5["predicates"][:, 0].astype(np.int64) - 1
    has_rel = index.first_rel >= 0
    # +1 where a training image's relation range starts, -1 after it ends: cumsum > 0 marks its rows
    edges = np.zeros(len(predicates) + 1, dtype=np.int64)
    np.add.at(edges, index.first_rel[has_rel], 1)
    np.add.at(edges, index.last_rel[has_rel] + 1, -1)
    in_train = np.cumsum(edges)[:-1] > 0
    return np.bincount(predicates[in_train], minlength=len(load_vocabulary(root).predicates))
