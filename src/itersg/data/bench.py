"""How fast and how small opening the VG150 index is, measured on a synthetic h5 of the real size."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np

from itersg.data.vg150 import CORRUPTED_IMAGE_IDS, DICTS_FILE, H5_FILE, IMAGE_DATA_FILE

REAL_IMAGES, REAL_BOXES, REAL_RELATIONS = 108_073, 1_145_398, 622_705


def write_real_size_index(root: Path, seed: int = 0) -> Path:
    """h5 + image_data.json + dicts with VG150's row counts (no images: the index does not open them)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    boxes_per_image = np.full(REAL_IMAGES, REAL_BOXES // REAL_IMAGES)
    boxes_per_image[: REAL_BOXES - boxes_per_image.sum()] += 1
    rels_per_image = np.full(REAL_IMAGES, REAL_RELATIONS // REAL_IMAGES)
    rels_per_image[: REAL_RELATIONS - rels_per_image.sum()] += 1
    first_box = np.concatenate([[0], np.cumsum(boxes_per_image)[:-1]]).astype(np.int32)
    first_rel = np.concatenate([[0], np.cumsum(rels_per_image)[:-1]]).astype(np.int32)
    rel_image = np.repeat(np.arange(REAL_IMAGES), rels_per_image)
    with h5py.File(root / H5_FILE, "w") as h5:
        h5["split"] = np.where(rng.random(REAL_IMAGES) < 0.7, 0, 2).astype(np.int32)
        h5["img_to_first_box"] = first_box
        h5["img_to_last_box"] = (first_box + boxes_per_image - 1).astype(np.int32)
        h5["img_to_first_rel"] = first_rel
        h5["img_to_last_rel"] = (first_rel + rels_per_image - 1).astype(np.int32)
        h5["labels"] = rng.integers(1, 151, (REAL_BOXES, 1))
        h5["boxes_1024"] = np.column_stack([rng.integers(100, 900, (REAL_BOXES, 2)),
                                            rng.integers(10, 100, (REAL_BOXES, 2))]).astype(np.int32)
        h5["relationships"] = (first_box[rel_image, None] + rng.integers(0, 10, (REAL_RELATIONS, 2))).astype(np.int32)
        h5["predicates"] = rng.integers(1, 51, (REAL_RELATIONS, 1))
    ids = [i for i in range(1, REAL_IMAGES + len(CORRUPTED_IMAGE_IDS) + 1)]
    records = [{"image_id": i, "url": "", "width": 800, "height": 600, "coco_id": None, "flickr_id": None}
               for i in ids]
    (root / IMAGE_DATA_FILE).write_text(json.dumps(records))
    (root / DICTS_FILE).write_text(json.dumps({"label_to_idx": {f"c{i}": i for i in range(1, 151)},
                                               "predicate_to_idx": {f"p{i}": i for i in range(1, 51)}}))
    return root


# Peak RSS from /proc/self/status VmHWM: unlike ru_maxrss it is not inherited across exec.
_MEASURE = textwrap.dedent("""
    import json, re, sys, time
    def peak_mib():
        return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024
    from itersg.data.vg150 import VG150Index
    before = peak_mib()
    start = time.perf_counter()
    index = VG150Index(sys.argv[1], "train")
    seconds = time.perf_counter() - start
    index.annotations(len(index) - 1)
    print(json.dumps({"seconds": seconds, "images": len(index), "peak_rss_mib": peak_mib(),
                      "rss_before_open_mib": before}))
""")


def bench_index(root: Path) -> dict:
    """Open the train index of a real-size VG150 folder in a fresh process: seconds and peak RSS."""
    if not (root / H5_FILE).exists():
        write_real_size_index(root)
    result = subprocess.run([sys.executable, "-c", _MEASURE, str(root)], capture_output=True, text=True, check=True)
    return {"bench": "index", **json.loads(result.stdout)}
