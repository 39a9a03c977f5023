"""Ways to spoil a VG150 h5, shared by the command-line table (``bad_inputs_datasets.py``) and the
``data verify`` tests: ``CORRUPTIONS`` maps a name to (setup on a VG150 folder, the field its error names).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

H5 = "VG-SGG-with-attri.h5"


def _edit(name: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    """Replace dataset ``name`` of the h5 under a VG150 folder by ``change(its array)``."""
    def setup(root: Path) -> None:
        with h5py.File(root / H5, "a") as h5:
            data = h5[name][()]
            del h5[name]
            h5[name] = change(data)
    return setup


def _drop(name: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        with h5py.File(root / H5, "a") as h5:
            del h5[name]
    return setup


def _at(index: tuple, value: float, dtype: type | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The array (as ``dtype``) with ``value`` at ``index``."""
    def change(data: np.ndarray) -> np.ndarray:
        data = data.astype(dtype or data.dtype)
        data[index] = value
        return data
    return change


def _relation_into_another_image(root: Path) -> None:
    """The first relation's subject becomes the last box of the file (another image's)."""
    with h5py.File(root / H5, "a") as h5:
        num_boxes = len(h5["labels"])
    _edit("relationships", _at((0, 0), num_boxes - 1))(root)


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "boxes-missing": (_drop("boxes_1024"), "dataset 'boxes_1024' missing"),
    "predicates-missing": (_drop("predicates"), "dataset 'predicates' missing"),
    "relationships-missing": (_drop("relationships"), "dataset 'relationships' missing"),
    "labels-one-dimensional": (_edit("labels", lambda a: a[:, 0]), "dataset 'labels' has shape"),
    "boxes-three-columns": (_edit("boxes_1024", lambda a: a[:, :3]), "dataset 'boxes_1024' has shape"),
    "labels-float": (_edit("labels", lambda a: a.astype(np.float32)), "dataset 'labels' has dtype float32"),
    "boxes-fewer-than-labels": (_edit("boxes_1024", lambda a: a[:-1]), "'boxes_1024' has"),
    "box-range-past-the-end": (_edit("img_to_last_box", _at(3, 10**6)), "img_to_first_box/img_to_last_box"),
    "relation-into-another-image": (_relation_into_another_image, "relationships[0]"),
    "relation-negative-index": (_edit("relationships", _at((0, 1), -1)), "relationships[0]"),
    "label-above-range": (_edit("labels", _at((0, 0), 999)), "'labels' range"),
    "label-zero": (_edit("labels", _at((0, 0), 0)), "'labels' range 0.."),
    "predicate-above-range": (_edit("predicates", _at((0, 0), 51)), "'predicates' range"),
    "split-value-one": (_edit("split", _at(0, 1)), "'split' is 1 at row 0"),
    "split-value-negative": (_edit("split", _at(5, -2)), "'split' is -2 at row 5"),
    "box-nan": (_edit("boxes_1024", _at((0, 1), np.nan, np.float32)), "'boxes_1024' row 0"),
    "box-infinite": (_edit("boxes_1024", _at((2, 2), np.inf, np.float32)), "'boxes_1024' row 2"),
    "box-zero-width": (_edit("boxes_1024", _at((1, 2), 0)), "'boxes_1024' row 1"),
    "box-negative-height": (_edit("boxes_1024", _at((3, 3), -4)), "'boxes_1024' row 3"),
    "box-negative-centre": (_edit("boxes_1024", _at((4, 0), -3)), "'boxes_1024' row 4"),
    "box-outside-the-frame": (_edit("boxes_1024", _at((0, 0), 1500)), "'boxes_1024' row 0"),
}


def box_outside_its_image(root: Path) -> None:
    """In the files of ``cli_inputs``: box 1 (of test image row 1, 64 x 61 px, so 1024 x 976 at longer side
    1024) moved below the image's bottom edge, still inside the 1024 x 1024 frame."""
    _edit("boxes_1024", _at((1, slice(None)), np.array([500, 1000, 100, 40])))(root)


def keep_predicate_1_out_of_training(root: Path) -> None:
    """Predicate 1 ('above') only in the test images: split-0 relations with it become predicate 2."""
    with h5py.File(root / H5, "a") as h5:
        split, first, last = h5["split"][()], h5["img_to_first_rel"][()], h5["img_to_last_rel"][()]
        predicates = h5["predicates"][()]
        for row in np.flatnonzero((split == 0) & (first >= 0)):
            block = predicates[first[row]:last[row] + 1]
            block[block == 1] = 2
        del h5["predicates"]
        h5["predicates"] = predicates
