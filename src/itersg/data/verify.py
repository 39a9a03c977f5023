"""`itersg data verify`: check a VG150 folder before any GPU time is spent on it.

Each problem is one line: the file, the field, what is wrong and what to do. Checks run in order of
dependency (files present -> h5 structure -> index ranges -> cross-file consistency -> images) and
stop early only where later checks could not make sense of the data.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from itersg.data.vg150 import (
    CORRUPTED_IMAGE_IDS,
    DICTS_FILE,
    H5_FILE,
    IMAGE_DATA_FILE,
    IMAGE_DIRS,
    ZERO_SHOT_FILE,
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
MAX_LINES_PER_CHECK = 5
REDOWNLOAD = "download it again (itersg fetch vg)"


def _limited(problems: list[str], what: str) -> Iterator[str]:
    yield from problems[:MAX_LINES_PER_CHECK]
    if len(problems) > MAX_LINES_PER_CHECK:
        yield f"... and {len(problems) - MAX_LINES_PER_CHECK} more {what}"


def check_files(root: Path) -> list[str]:
    missing = [name for name in (H5_FILE, DICTS_FILE, IMAGE_DATA_FILE, ZERO_SHOT_FILE) if not (root / name).is_file()]
    problems = [f"{root / name}: missing; {REDOWNLOAD} or point data.root at the VG150 folder" for name in missing]
    if not any((root / folder).is_dir() for folder in IMAGE_DIRS):
        problems.append(f"{root / 'VG_100K'}: image folder missing; unpack images.zip and images2.zip there")
    return problems


def read_h5(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """The h5 datasets the loader reads, and the structural problems found."""
    arrays, problems = {}, []
    try:
        with h5py.File(path, "r") as h5:
            for name, (ndim, kinds, columns) in H5_LAYOUT.items():
                if name not in h5:
                    problems.append(f"{path}: dataset '{name}' missing; {REDOWNLOAD}")
                    continue
                data = h5[name][()]
                if data.ndim != ndim or (columns and data.shape[1] != columns):
                    expected = f"(n, {columns})" if columns else "(n,)"
                    problems.append(
                        f"{path}: dataset '{name}' has shape {data.shape}, expected {expected}; {REDOWNLOAD}")
                elif data.dtype.kind not in kinds:
                    problems.append(f"{path}: dataset '{name}' has dtype {data.dtype}, expected integer; {REDOWNLOAD}")
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
    if bad := np.flatnonzero(~np.isin(a["split"], (0, 1, 2))).tolist():
        problems.append(f"{path}: 'split' has values other than 0/1/2 at rows {bad[:5]}; {REDOWNLOAD}")
    for kind, total in (("box", len(a["labels"])), ("rel", len(a["predicates"]))):
        first, last = a[f"img_to_first_{kind}"], a[f"img_to_last_{kind}"]
        has = first >= 0
        # a range first <= last inside the flat array, or the pair -1/-1 for "none"
        broken = (has & ((last < first) | (last >= total))) | (~has & ((first != -1) | (last != -1)))
        lines = [f"{path}: image row {row}: img_to_first_{kind}/img_to_last_{kind} = {first[row]}/{last[row]}, "
                 f"expected 0 <= first <= last <= {total - 1} or -1/-1; {REDOWNLOAD}" for row in np.flatnonzero(broken)]
        problems += _limited(lines, f"img_to_first_{kind}/img_to_last_{kind} problems")
    if len(a["relationships"]) != len(a["predicates"]):
        problems.append(f"{path}: 'relationships' has {len(a['relationships'])} rows, 'predicates' "
                        f"{len(a['predicates'])}; {REDOWNLOAD}")
    return problems or check_relations_inside_images(path, a)


def check_relations_inside_images(path: Path, a: dict[str, np.ndarray]) -> list[str]:
    rows = np.flatnonzero(a["img_to_first_rel"] >= 0)
    counts = a["img_to_last_rel"][rows] - a["img_to_first_rel"][rows] + 1
    rel_image = np.repeat(rows, counts)
    rel_index = np.concatenate([np.arange(f, last + 1) for f, last in zip(a["img_to_first_rel"][rows],
                                                                     a["img_to_last_rel"][rows], strict=True)] or [[]])
    rel_index = rel_index.astype(np.int64)
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
    boxes = a["boxes_1024"]
    if len(boxes) and ((boxes[:, 2:] <= 0).any() or (boxes[:, :2] < 0).any()):
        problems.append(f"{path}: 'boxes_1024' has non-positive sizes or negative centres; {REDOWNLOAD}")
    return problems


def read_dicts(root: Path) -> tuple[int, int, list[str]]:
    path = root / DICTS_FILE
    try:
        dicts = json.loads(path.read_text())
        return len(dicts["label_to_idx"]), len(dicts["predicate_to_idx"]), []
    except (json.JSONDecodeError, UnicodeDecodeError):
        return 0, 0, [f"{path}: not valid JSON; {REDOWNLOAD}"]
    except (KeyError, TypeError):
        return 0, 0, [f"{path}: field 'label_to_idx' or 'predicate_to_idx' missing; {REDOWNLOAD}"]


def read_image_data(root: Path, n_rows: int) -> tuple[list[dict], list[str]]:
    path = root / IMAGE_DATA_FILE
    try:
        entries = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return [], [f"{path}: not valid JSON; {REDOWNLOAD}"]
    if not isinstance(entries, list) or not all(isinstance(e, dict) and {"image_id", "width", "height"} <= e.keys()
                                                for e in entries):
        return [], [f"{path}: expected a list of records with image_id, width, height; {REDOWNLOAD}"]
    kept = [e for e in entries if e["image_id"] not in CORRUPTED_IMAGE_IDS]
    bad_sizes = [f"{path}: image_id {e['image_id']}: width/height {e['width']}/{e['height']} are not positive "
                 f"integers; {REDOWNLOAD}" for e in kept
                 if not all(isinstance(e[k], int) and not isinstance(e[k], bool) and e[k] > 0
                            for k in ("width", "height"))]
    problems = list(_limited(bad_sizes, "image size problems"))
    if len(kept) != n_rows:
        problems.append(f"{path}: {len(kept)} images after dropping the corrupted ids {list(CORRUPTED_IMAGE_IDS)}, "
                        f"but {H5_FILE} has {n_rows} rows; use the image_data.json that belongs to this h5")
    return kept, problems


def check_zero_shot(root: Path, num_classes: int, num_predicates: int) -> list[str]:
    import torch

    path = root / ZERO_SHOT_FILE
    try:
        triplets = torch.load(path, weights_only=True)
    except Exception:
        return [f"{path}: not a torch-saved tensor; {REDOWNLOAD}"]
    if not isinstance(triplets, torch.Tensor) or triplets.ndim != 2 or triplets.shape[1] != 3:
        return [f"{path}: expected an int tensor of shape (n, 3); {REDOWNLOAD}"]
    highs = torch.tensor([num_classes, num_classes, num_predicates])
    if len(triplets) and ((triplets < 1).any() or (triplets > highs).any()):
        return [f"{path}: values outside 1..{num_classes} (classes) / 1..{num_predicates} (predicates); "
                f"use the file of the same release as {DICTS_FILE}"]
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


def check_structure(root: str | Path) -> None:
    """The file checks of ``verify`` without opening the images (about a second for VG150): raise the
    first problem as a UserError. For commands that read the files without the workflow's verify step."""
    problems, _ = verify(root, images=False)
    if problems:
        raise UserError(f"{problems[0]} (`itersg data verify --root {root}` lists every problem)")


def verify(root: str | Path, decode: bool = False, images: bool = True) -> tuple[list[str], str]:
    """All problems of the VG150 folder ``root`` (empty if none) and a one-line summary.

    ``images`` False skips the image files (existence, decoding, sizes).
    """
    root = Path(root)
    problems = check_files(root)
    if problems:
        return problems, ""
    arrays, problems = read_h5(root / H5_FILE)
    num_classes, num_predicates, dict_problems = read_dicts(root)
    problems += dict_problems
    if problems:
        return problems, ""
    problems += check_index(root / H5_FILE, arrays)
    problems += check_labels(root / H5_FILE, arrays, num_classes, num_predicates)
    image_records, image_problems = read_image_data(root, len(arrays["split"]))
    problems += image_problems + check_zero_shot(root, num_classes, num_predicates)
    if problems:
        return problems, ""
    used = np.flatnonzero((arrays["img_to_first_box"] >= 0) & np.isin(arrays["split"], (0, 2)))
    if not images:
        return problems, ""
    problems += check_images(root, image_records, used, decode)
    summary = (f"{root}: OK: {len(arrays['split'])} images ({len(used)} with boxes, all image files present), "
               f"{len(arrays['labels'])} boxes, {len(arrays['predicates'])} relations, {num_classes} classes, "
               f"{num_predicates} predicates")
    return problems, summary
