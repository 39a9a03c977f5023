"""The VG150 validator: one set of checks for every command that reads the VG150 files.

Two forms. ``check_structure`` (the fast form, about a second on the real files) checks what every
reader of the h5 opens (h5, dicts, image_data.json) and raises the first problem; ``VG150Index`` runs
it when it opens a folder, so training, evaluation, ``metrics``, ``data prepare`` and the report all
refuse a broken file before any work. ``verify`` (``itersg data verify``) is the thorough form: the
same checks plus the zero-shot file and the images, every problem listed. Each problem is one line: the
file, the field, what is wrong and what to do. Checks run in order of dependency (files present -> h5
structure -> index ranges -> cross-file consistency -> images) and stop early only where later
checks could not make sense of the data.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from itersg.data.vg150 import (
    BOX_SCALE,
    CORRUPTED_IMAGE_IDS,
    DICTS_FILE,
    H5_FILE,
    IMAGE_DATA_FILE,
    IMAGE_DIRS,
    ZERO_SHOT_FILE,
    read_zero_shot,
)
from itersg.errors import UserError

# dataset -> (ndim, allowed dtype kinds, columns or None)
H5_LAYOUT = {
    "split": (1, "iu", None),
    "img_to_first_box": (1, "i", None),
    "img_to_last_box": (1, "i", None),
    "img_to_first_rel": (1, "i", None),
    "img_to_last_rel": (1, "i", None),
    "labels": (2, "iu", 1),
    "boxes_1024": (2, "iuf", 4),
    "relationships": (2, "iu", 2),
    "predicates": (2, "iu", 1),
}
KIND_NAMES = {"iu": "integer", "i": "signed integer", "iuf": "integer or float"}
# The published file has only 0 (train/val) and 2 (test); Xu et al.'s code could write 1 (val), but the
# loaders take split 0 or 2 only, so images marked otherwise would silently belong to no split.
SPLIT_VALUES = (0, 2)
ANNOTATION_FILES = (H5_FILE, DICTS_FILE, IMAGE_DATA_FILE)  # what every reader of the h5 opens
MAX_LINES_PER_CHECK = 5
REDOWNLOAD = "download it again (itersg fetch vg)"


@dataclass
class Annotations:
    """What the fast checks read: the h5 arrays, the image records (h5 row order) and the vocabulary."""

    arrays: dict[str, np.ndarray]
    images: list[dict]
    num_classes: int
    predicate_names: list[str]


def _limited(problems: list[str], what: str) -> Iterator[str]:
    yield from problems[:MAX_LINES_PER_CHECK]
    if len(problems) > MAX_LINES_PER_CHECK:
        yield f"... and {len(problems) - MAX_LINES_PER_CHECK} more {what}"


def _ranges_to_rows(first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive ranges ``first..last`` (-1/-1: none) expanded: (position of the range, row) per covered row."""
    has = np.flatnonzero(first >= 0)
    counts = (last[has].astype(np.int64) - first[has] + 1)
    starts = np.cumsum(counts) - counts
    rows = np.arange(counts.sum()) + np.repeat(first[has].astype(np.int64) - starts, counts)
    return np.repeat(has, counts), rows


def missing_files(root: Path, names: Sequence[str]) -> list[str]:
    return [f"{root / name}: missing; {REDOWNLOAD} or point data.root at the VG150 folder"
            for name in names if not (root / name).is_file()]


def check_files(root: Path) -> list[str]:
    problems = missing_files(root, (*ANNOTATION_FILES, ZERO_SHOT_FILE))
    if not any((root / folder).is_dir() for folder in IMAGE_DIRS):
        problems.append(f"{root / 'VG_100K'}: image folder missing; unpack images.zip and images2.zip there")
    return problems


def read_h5(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """The h5 datasets the loader reads, and the structural problems found."""
    arrays, problems = {}, []
    try:
        with h5py.File(path, "r") as h5:
            for name, (ndim, kinds, columns) in H5_LAYOUT.items():
                if not isinstance(h5.get(name), h5py.Dataset):
                    problems.append(f"{path}: dataset '{name}' missing; {REDOWNLOAD}")
                    continue
                data = h5[name][()]
                if data.ndim != ndim or (columns and data.shape[1] != columns):
                    expected = f"(n, {columns})" if columns else "(n,)"
                    problems.append(
                        f"{path}: dataset '{name}' has shape {data.shape}, expected {expected}; {REDOWNLOAD}")
                elif data.dtype.kind not in kinds:
                    problems.append(f"{path}: dataset '{name}' has dtype {data.dtype}, expected "
                                    f"{KIND_NAMES[kinds]}; {REDOWNLOAD}")
                else:
                    arrays[name] = data
    except OSError as err:
        problems.append(f"{path}: unreadable or truncated h5 ({str(err).splitlines()[0]}); {REDOWNLOAD}")
    return arrays, problems


def check_index(path: Path, a: dict[str, np.ndarray]) -> list[str]:
    """Per-image ranges inside the flat arrays, relations inside their own image's boxes."""
    problems = []
    n_images = len(a["split"])
    for name in ("img_to_first_box", "img_to_last_box", "img_to_first_rel", "img_to_last_rel"):
        if len(a[name]) != n_images:
            problems.append(f"{path}: '{name}' has {len(a[name])} rows, 'split' has {n_images}; {REDOWNLOAD}")
    if problems:
        return problems
    if len(bad := np.flatnonzero(~np.isin(a["split"], SPLIT_VALUES))):
        problems.append(f"{path}: 'split' is {a['split'][bad[0]]} at row {bad[0]} ({len(bad)} of "
                        f"{len(a['split'])} rows), expected 0 (train/val) or 2 (test) as in the published file: "
                        f"such images belong to no split; {REDOWNLOAD}")
    for kind, total in (("box", len(a["labels"])), ("rel", len(a["predicates"]))):
        first, last = a[f"img_to_first_{kind}"], a[f"img_to_last_{kind}"]
        has = first >= 0
        # a range first <= last inside the flat array, or the pair -1/-1 for "none"
        broken = (has & ((last < first) | (last >= total))) | (~has & ((first != -1) | (last != -1)))
        lines = [f"{path}: image row {row}: img_to_first_{kind}/img_to_last_{kind} = {first[row]}/{last[row]}, "
                 f"expected 0 <= first <= last <= {total - 1} or -1/-1; {REDOWNLOAD}" for row in np.flatnonzero(broken)]
        problems += _limited(lines, f"img_to_first_{kind}/img_to_last_{kind} problems")
    for flat, other in (("boxes_1024", "labels"), ("relationships", "predicates")):
        if len(a[flat]) != len(a[other]):
            problems.append(f"{path}: '{flat}' has {len(a[flat])} rows, '{other}' {len(a[other])}; {REDOWNLOAD}")
    return problems or check_relations_inside_images(path, a)


def check_relations_inside_images(path: Path, a: dict[str, np.ndarray]) -> list[str]:
    rel_image, rel_index = _ranges_to_rows(a["img_to_first_rel"], a["img_to_last_rel"])
    pairs = a["relationships"][rel_index]
    lo, hi = a["img_to_first_box"][rel_image][:, None], a["img_to_last_box"][rel_image][:, None]
    outside = np.flatnonzero(((pairs < lo) | (pairs > hi)).any(axis=1))
    lines = [f"{path}: relationships[{rel_index[i]}] = {pairs[i].tolist()} points outside the boxes of image row "
             f"{rel_image[i]} ({lo[i, 0]}..{hi[i, 0]}); {REDOWNLOAD}" for i in outside]
    return list(_limited(lines, "relationships problems"))


def check_labels(path: Path, a: dict[str, np.ndarray], num_classes: int, num_predicates: int) -> list[str]:
    problems = []
    for name, high in (("labels", num_classes), ("predicates", num_predicates)):
        values = a[name][:, 0]
        if len(values) and (values.min() < 1 or values.max() > high):
            problems.append(f"{path}: '{name}' range {values.min()}..{values.max()} outside 1..{high} of "
                            f"{DICTS_FILE}; use the h5 and dicts file of the same release")
    return problems


def check_boxes(path: Path, boxes: np.ndarray) -> list[str]:
    """``boxes_1024`` [N, 4] (cx, cy, w, h) at longer side 1024: finite, centre >= 0, width and height > 0
    (the reference loader asserts both on the whole array) and top-left corner inside 1024 x 1024.

    A box may reach past its own image, or even lie wholly outside it: Xu et al.'s encoder, which wrote
    the published file, clamps every box to the 1024 x 1024 square, not to the image, and VG has boxes
    past the image border. The reference clips boxes to the image and drops those left empty (with
    their relations), and so does this loader (``clip_and_drop_empty``, ``transforms.apply``); only a
    corner at or past 1024 cannot come from that encoder.
    """
    values = boxes.astype(np.float64)
    finite = np.isfinite(values).all(axis=1)
    tests = (
        (~finite, "a NaN or infinite value"),
        (finite & (values[:, 2:] <= 0).any(axis=1), "a zero or negative width or height (columns 3-4)"),
        (finite & (values[:, :2] < 0).any(axis=1), "a negative centre (columns 1-2)"),
        (finite & (values[:, :2] - values[:, 2:] / 2 >= BOX_SCALE).any(axis=1),
         f"its top-left corner at or past {BOX_SCALE}, outside the {BOX_SCALE} x {BOX_SCALE} frame of "
         "boxes_1024 (cx, cy, w, h)"),
    )
    problems = []
    for bad, what in tests:
        if len(rows := np.flatnonzero(bad)):
            more = f" ({len(rows) - 1} more rows like it)" if len(rows) > 1 else ""
            problems.append(f"{path}: 'boxes_1024' row {rows[0]} = {boxes[rows[0]].tolist()} has {what}{more}; "
                            f"{REDOWNLOAD}")
    return problems


def check_predicate_counts(path: Path, read: Annotations) -> list[str]:
    """A warning for predicates without a relation in the training images (split 0), else nothing.

    Not an error: the reference trains on such a file. Its loss weight max(1, alpha / (f + 1e-5)) ** beta
    stays finite at f = 0 and weighs only targets of that predicate, of which training has none: the
    model never learns the predicate, and its test recall can only be 0.
    """
    a = read.arrays
    first = np.where(a["split"] == 0, a["img_to_first_rel"], -1)
    _, rows = _ranges_to_rows(first, a["img_to_last_rel"])
    counts = np.bincount(a["predicates"][rows, 0] - 1, minlength=len(read.predicate_names))
    unseen = [read.predicate_names[i] for i in np.flatnonzero(counts == 0)]
    if not unseen:
        return []
    shown = ", ".join(repr(name) for name in unseen[:MAX_LINES_PER_CHECK])
    more = f" and {len(unseen) - MAX_LINES_PER_CHECK} more" if len(unseen) > MAX_LINES_PER_CHECK else ""
    return [f"{path}: 'predicates': {len(unseen)} of {len(counts)} predicates have no relation in the training "
            f"images (split 0): {shown}{more}; training runs, as the reference's does, but cannot learn them "
            "(their recall stays 0)"]


def read_dicts(root: Path) -> tuple[int, list[str], list[str]]:
    """Number of object classes, predicate names (by index) and the problems of the dicts file."""
    path = root / DICTS_FILE
    try:
        dicts = json.loads(path.read_text())
        predicates = dicts["predicate_to_idx"]
        return len(dicts["label_to_idx"]), sorted(predicates, key=lambda name: predicates[name]), []
    except (json.JSONDecodeError, UnicodeDecodeError):
        return 0, [], [f"{path}: not valid JSON; {REDOWNLOAD}"]
    except (KeyError, TypeError):
        return 0, [], [f"{path}: field 'label_to_idx' or 'predicate_to_idx' missing; {REDOWNLOAD}"]


def read_image_data(root: Path, n_rows: int) -> tuple[list[dict], list[str]]:
    path = root / IMAGE_DATA_FILE
    try:
        entries = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return [], [f"{path}: not valid JSON; {REDOWNLOAD}"]
    try:
        kept = [e for e in entries if e["image_id"] not in CORRUPTED_IMAGE_IDS]
        sizes = [(e["width"], e["height"]) for e in kept]
    except (KeyError, TypeError):  # not a list of records (a dict, a string, records without the keys)
        return [], [f"{path}: expected a list of records with image_id, width, height; {REDOWNLOAD}"]
    bad_sizes = [f"{path}: image_id {e['image_id']}: width/height {w}/{h} are not positive integers; {REDOWNLOAD}"
                 for e, (w, h) in zip(kept, sizes, strict=True)
                 if type(w) is not int or type(h) is not int or w <= 0 or h <= 0]  # bool is not an int here
    problems = list(_limited(bad_sizes, "image size problems"))
    if len(kept) != n_rows:
        problems.append(f"{path}: {len(kept)} images after dropping the corrupted ids {list(CORRUPTED_IMAGE_IDS)}, "
                        f"but {H5_FILE} has {n_rows} rows; use the image_data.json that belongs to this h5")
    return kept, problems


def check_zero_shot(root: Path, num_classes: int, num_predicates: int) -> list[str]:
    try:
        triplets = read_zero_shot(root / ZERO_SHOT_FILE)
    except UserError as err:
        return [str(err)]
    highs = np.array([num_classes, num_classes, num_predicates])
    if len(triplets) and (triplets > highs).any():
        return [f"{root / ZERO_SHOT_FILE}: values outside 1..{num_classes} (classes) / 1..{num_predicates} "
                f"(predicates); use the file of the same release as {DICTS_FILE}"]
    return []


def check_images(root: Path, images: list[dict], rows: np.ndarray, decode: bool) -> list[str]:
    """Every image that a split uses must exist (and open; fully decode with ``decode``).

    With ``decode`` the decoded size must also be the one ``image_data.json`` gives: the h5 boxes are
    scaled by it, so a wrong size puts every box of the image (and of its predictions) at the wrong
    scale. VG's own image_data.json has such wrong sizes; Scene-Graph-Benchmark's copy, which the
    reference uses, has none.
    """
    files = {}
    for folder in IMAGE_DIRS:
        if (root / folder).is_dir():
            for entry in (root / folder).iterdir():
                files.setdefault(entry.name, entry)
    missing, broken, wrong_size = [], [], []
    for row in rows:
        record = images[row]
        name = f"{record['image_id']}.jpg"
        if name not in files:
            missing.append(name)
            continue
        try:
            with Image.open(files[name]) as image:
                image.load() if decode else image.verify()
                if decode and image.size != (record["width"], record["height"]):
                    wrong_size.append((name, image.size, (record["width"], record["height"])))
        except (OSError, SyntaxError):
            broken.append(name)
    problems = [f"{root / 'VG_100K' / n}: image missing; unpack both image zips into VG_100K" for n in missing]
    problems += [f"{files[n]}: image cannot be decoded; download the image zips again" for n in broken]
    problems += [f"{files[n]}: the JPEG is {real[0]}x{real[1]} but {IMAGE_DATA_FILE} says {said[0]}x{said[1]}; use "
                 "Scene-Graph-Benchmark's image_data.json (VG's own has wrong sizes)" for n, real, said in wrong_size]
    return list(_limited(problems, "image problems"))


def check_annotations(root: Path) -> tuple[list[str], Annotations | None]:
    """Problems of the files every reader of the h5 opens (h5, dicts, image_data.json), and what was read.

    Shapes and dtypes, index ranges, split values, relations inside their image's boxes, label and
    predicate ranges, boxes (``check_boxes``), image records. None instead of the arrays when a file or
    dataset is missing or unreadable.
    """
    problems = missing_files(root, ANNOTATION_FILES)
    if problems:
        return problems, None
    path = root / H5_FILE
    arrays, problems = read_h5(path)
    num_classes, predicate_names, dict_problems = read_dicts(root)
    problems += dict_problems
    if problems:
        return problems, None
    problems += check_index(path, arrays)
    problems += check_labels(path, arrays, num_classes, len(predicate_names))
    problems += check_boxes(path, arrays["boxes_1024"])
    images, image_problems = read_image_data(root, len(arrays["split"]))
    return problems + image_problems, Annotations(arrays, images, num_classes, predicate_names)


_checked: set[tuple] = set()  # folders (with their files' sizes and times) that passed check_structure


def _file_state(root: Path) -> tuple:
    stats = [(root / name).stat() for name in ANNOTATION_FILES if (root / name).is_file()]
    return str(root.resolve()), tuple((s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns) for s in stats)


def check_structure(root: str | Path) -> None:
    """The fast checks (``check_annotations``, about a second for VG150): raise the first problem as a
    UserError, warn about predicates without training relations. Run by every reader of the h5 (the
    VG150 index runs it on opening); repeated for the same unchanged files, it returns at once."""
    root = Path(root)
    state = _file_state(root)
    if state in _checked:
        return
    problems, read = check_annotations(root)
    if problems:
        raise UserError(f"{problems[0]} (`itersg data verify --root {root}` lists every problem)")
    for warning in check_predicate_counts(root / H5_FILE, read):
        warnings.warn(warning, stacklevel=2)
    _checked.add(state)


def boxes_outside_their_image(read: Annotations) -> int:
    """How many boxes lie wholly outside their own image (tolerated: see ``check_boxes``)."""
    a = read.arrays
    image, rows = _ranges_to_rows(a["img_to_first_box"], a["img_to_last_box"])
    sizes = np.array([[record["width"], record["height"]] for record in read.images], dtype=np.float64)
    frames = sizes / sizes.max(axis=1, keepdims=True) * BOX_SCALE  # image width, height at longer side 1024
    boxes = a["boxes_1024"][rows].astype(np.float64)
    return int((boxes[:, :2] - boxes[:, 2:] / 2 >= frames[image]).any(axis=1).sum())


def verify(root: str | Path, decode: bool = False) -> tuple[list[str], str]:
    """All problems of the VG150 folder ``root`` (empty if none) and a one-line summary: the checks of
    ``check_structure``, the zero-shot file and every image a split uses (``decode``: fully decoded)."""
    root = Path(root)
    problems = check_files(root)
    if problems:
        return problems, ""
    problems, read = check_annotations(root)
    if read is None:
        return problems, ""
    problems += check_zero_shot(root, read.num_classes, len(read.predicate_names))
    if problems:
        return problems, ""
    for warning in check_predicate_counts(root / H5_FILE, read):
        warnings.warn(warning, stacklevel=2)
    a = read.arrays
    used = np.flatnonzero((a["img_to_first_box"] >= 0) & np.isin(a["split"], SPLIT_VALUES))
    problems += check_images(root, read.images, used, decode)
    outside = boxes_outside_their_image(read)
    summary = (f"{root}: OK: {len(a['split'])} images ({len(used)} with boxes, all image files present), "
               f"{len(a['labels'])} boxes, {len(a['predicates'])} relations, {read.num_classes} classes, "
               f"{len(read.predicate_names)} predicates"
               + (f"; {outside} box(es) lie wholly outside their image (dropped when read, as the reference "
                  "does)" if outside else ""))
    return problems, summary
