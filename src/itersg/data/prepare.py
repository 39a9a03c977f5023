"""`itersg data prepare`: the summary of a VG150 folder that training and the report read."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from itersg.data.vg150 import (
    DICTS_FILE,
    H5_FILE,
    IMAGE_DATA_FILE,
    SPLITS,
    ZERO_SHOT_FILE,
    VG150Index,
    load_vocabulary,
    predicate_frequencies,
)
from itersg.errors import UserError
from itersg.files import writable_file, write_text_atomic

SUMMARY_FORMAT = "itersg-data-summary"  # the summary's ``format``: marks the file as written by write_summary


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def summarize(root: str | Path, num_val_images: int = 5000) -> dict:
    """Split sizes, class/predicate names, training predicate frequencies and input checksums."""
    root = Path(root)
    vocabulary = load_vocabulary(root)
    split_sizes = {split: len(VG150Index(root, split, num_val_images)) for split in SPLITS}
    if split_sizes["train"] == 0:
        raise UserError(f"{root}: the first {num_val_images} images of the training split (data.num_val_images) "
                        f"are all of its {split_sizes['val']} images, leaving none to train on; lower "
                        "data.num_val_images (--num-val)")
    return {
        "format": SUMMARY_FORMAT,
        "root": str(root),
        "num_val_images": num_val_images,
        "split_sizes": split_sizes,
        "class_names": list(vocabulary.classes),
        "predicate_names": list(vocabulary.predicates),
        "predicate_frequencies": predicate_frequencies(root, num_val_images).tolist(),
        "sha256": {name: sha256(root / name) for name in (H5_FILE, DICTS_FILE, IMAGE_DATA_FILE, ZERO_SHOT_FILE)},
    }


def write_summary(root: str | Path, out: str | Path, num_val_images: int = 5000) -> dict:
    writable_file(out)  # before the work: a folder given for the file is a slip
    summary = summarize(root, num_val_images)
    write_text_atomic(out, json.dumps(summary, indent=1))
    return summary
