"""How fast and how small validating and opening the VG150 index are, measured on a synthetic h5 of the
real size; and how many images per second the training data path delivers (``bench_loader``).

The folder holds what the index reads (h5, image_data.json, dicts; no images): 108,073 images,
~1.1M boxes, ~620k relations, every dataset of the real h5 with its dtype (so the file is ~150 MB
like the real one). The measurement runs in a fresh interpreter so its peak RSS is the index's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from itersg.data.vg150 import CORRUPTED_IMAGE_IDS, DICTS_FILE, H5_FILE, IMAGE_DATA_FILE
from itersg.files import holds_only, output_mark

REAL_IMAGES, REAL_BOXES, REAL_RELATIONS = 108_073, 1_145_398, 622_705
SIZE_FILE = "bench-sizes.json"  # the sizes a folder was written with (rewritten when they change)
INDEX_FORMAT = "itersg-bench-index"  # the h5's ``format`` attribute: marks a folder as written here
INDEX_NAMES = (H5_FILE, IMAGE_DATA_FILE, DICTS_FILE, SIZE_FILE)


def _ranges(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """first/last row per image for ``counts`` rows each; -1/-1 where the count is 0."""
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    last = first + counts - 1
    return np.where(counts > 0, first, -1).astype(np.int32), np.where(counts > 0, last, -1).astype(np.int32)


def _spread(total: int, parts: int, rng: np.random.Generator, empty_fraction: float = 0.0) -> np.ndarray:
    """``total`` rows over ``parts`` images, uneven like VG, with ``empty_fraction`` of images getting none."""
    weights = rng.gamma(2.0, 1.0, parts) * (rng.random(parts) >= empty_fraction)
    counts = np.floor(weights / weights.sum() * total).astype(np.int64)
    counts[np.flatnonzero(weights)[: total - counts.sum()]] += 1
    return counts


def _image_ids(num_images: int) -> range:
    """1, 2, ... up to where ``num_images`` ids remain without the corrupted ones (listed but not in the h5)."""
    last = num_images
    while last - sum(c <= last for c in CORRUPTED_IMAGE_IDS) < num_images:
        last += 1
    return range(1, last + 1)


def is_index_folder(folder: Path) -> bool:
    """Whether ``folder`` holds only what ``write_real_size_index`` writes: rewriting it loses nothing."""
    written_here = output_mark(folder / H5_FILE) == INDEX_FORMAT or (folder / SIZE_FILE).is_file()
    return holds_only(folder, INDEX_NAMES) and written_here


def write_real_size_index(root: Path, num_images: int = REAL_IMAGES, num_boxes: int = REAL_BOXES,
                          num_relations: int = REAL_RELATIONS, seed: int = 0) -> Path:
    """h5 + image_data.json + dicts with VG150's layout and row counts (no images: the index does not open them)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    boxes_per_image = _spread(num_boxes - num_images, num_images, rng) + 1  # every image has a box
    rels_per_image = _spread(num_relations, num_images, rng, empty_fraction=0.15)
    first_box, last_box = _ranges(boxes_per_image)
    first_rel, last_rel = _ranges(rels_per_image)
    rel_image = np.repeat(np.arange(num_images), rels_per_image)
    local = rng.integers(0, boxes_per_image[rel_image, None], (num_relations, 2))
    centres, sides = rng.integers(100, 900, (num_boxes, 2)), rng.integers(10, 200, (num_boxes, 2))
    with h5py.File(root / H5_FILE, "w") as h5:
        h5.attrs["format"] = INDEX_FORMAT
        h5["split"] = np.where(rng.random(num_images) < 0.7, 0, 2).astype(np.int32)
        for name, values in (("img_to_first_box", first_box), ("img_to_last_box", last_box),
                             ("img_to_first_rel", first_rel), ("img_to_last_rel", last_rel)):
            h5[name] = values
        h5["labels"] = rng.integers(1, 151, (num_boxes, 1))
        h5["boxes_1024"] = np.column_stack([centres, sides]).astype(np.int32)
        h5["boxes_512"] = np.column_stack([centres // 2, np.maximum(sides // 2, 1)]).astype(np.int32)
        h5["attributes"] = np.zeros((num_boxes, 10), dtype=np.int64)
        h5["active_object_mask"] = np.ones((num_boxes, 1), dtype=bool)
        h5["relationships"] = (first_box[rel_image, None] + local).astype(np.int32)
        h5["predicates"] = rng.integers(1, 51, (num_relations, 1))
    records = [{"width": 800, "url": f"https://cs.stanford.edu/people/rak248/VG_100K_2/{i}.jpg", "height": 600,
                "image_id": i, "coco_id": None if i % 3 else 1000 + i, "flickr_id": None if i % 4 else 2000 + i}
               for i in _image_ids(num_images)]
    (root / IMAGE_DATA_FILE).write_text(json.dumps(records))
    (root / DICTS_FILE).write_text(json.dumps({"label_to_idx": {f"c{i}": i for i in range(1, 151)},
                                               "predicate_to_idx": {f"p{i}": i for i in range(1, 51)}}))
    (root / SIZE_FILE).write_text(json.dumps([num_images, num_boxes, num_relations]))
    return root


# Peak RSS from /proc/self/status VmHWM (ru_maxrss where /proc is missing, in KiB on Linux).
_MEASURE = textwrap.dedent("""
    import json, re, resource, sys, time
    def peak_mib():
        try:
            status = open("/proc/self/status").read()
            return int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) / 1024
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from itersg.data.verify import check_structure
    from itersg.data.vg150 import VG150Index
    before = peak_mib()
    start = time.perf_counter()
    check_structure(sys.argv[1])
    validate_seconds = time.perf_counter() - start
    validate_peak = peak_mib()
    start = time.perf_counter()
    index = VG150Index(sys.argv[1], sys.argv[2])  # the validation above is not repeated
    seconds = time.perf_counter() - start
    open_peak = peak_mib()
    read_ms = None
    if len(index):
        index.annotations(0)  # warm-up: the training split's duplicate filter imports torch (~400 MiB)
        rows = range(0, len(index), max(1, len(index) // 1000))
        start = time.perf_counter()
        for i in rows:
            index.annotations(i)
        read_ms = (time.perf_counter() - start) / len(rows) * 1000
    print(json.dumps({"validate_seconds": validate_seconds, "validate_peak_rss_mib": validate_peak,
                      "seconds": seconds, "images": len(index), "peak_rss_mib": open_peak,
                      "rss_before_open_mib": before, "annotation_read_ms": read_ms,
                      "peak_rss_after_reads_mib": peak_mib()}))
""")


def _written_sizes(root: Path) -> Any:
    """The sizes the folder was written with; None when unknown (no or an unreadable file: it is rewritten)."""
    try:
        return json.loads((root / SIZE_FILE).read_text())
    except (OSError, ValueError):
        return None


def bench_index(root: Path, num_images: int = REAL_IMAGES, num_boxes: int = REAL_BOXES,
                num_relations: int = REAL_RELATIONS, split: str = "train") -> dict:
    """Validate a real-size VG150 folder (``check_structure``, as every command does on opening it), then
    open ``split`` in the same fresh process: seconds and peak RSS of each, lazy read time.

    Writes the folder first (a few seconds) unless ``root`` already holds one of these sizes.
    """
    root = Path(root)
    if _written_sizes(root) != [num_images, num_boxes, num_relations]:
        write_real_size_index(root, num_images, num_boxes, num_relations)
    result = subprocess.run([sys.executable, "-c", _MEASURE, str(root), split], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"index benchmark failed:\n{result.stderr}")
    return {"bench": "index", "split": split, "h5_bytes": (root / H5_FILE).stat().st_size,
            **json.loads(result.stdout)}


def bench_loader(root: Path, workers: int, transform_sizes: dict, num_images: int = 400, batch_size: int = 12,
                 batches: int = 20, seed: int = 0) -> dict:
    """Images per second of the training data path: JPEG decode, the training transform and collate.

    ``root`` gets a synthetic VG150-format dataset with images of VG sizes (longer side 1024) on first
    use. The training split is read in a seeded random order by a DataLoader with ``workers`` worker
    processes (0: in this process) and batches of ``batch_size``; the first batch (worker start-up) is
    not timed. CPU seconds per image count this process and its workers over all images loaded.
    ``transform_sizes`` holds the ``data.*`` keys of ``train_transforms``.
    """
    import resource

    import torch
    from torch.utils.data import DataLoader

    from itersg.data.dataset import VG150Dataset, collate
    from itersg.data.synth import generate
    from itersg.data.transforms import train_transforms
    from itersg.data.vg150 import VG150Index

    root = Path(root)
    if not (root / H5_FILE).is_file():
        generate(root, images=num_images, seed=seed, image_size=1024)
    transform = train_transforms(transform_sizes["train_min_sizes"], transform_sizes["train_max_size"],
                                 transform_sizes["crop_resize_sizes"], transform_sizes["crop_size"])
    dataset = VG150Dataset(VG150Index(root, "train", 0), transform)

    def cpu_seconds() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    cpu_start = cpu_seconds()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate,
                        generator=torch.Generator().manual_seed(seed))
    batch_iter = iter(loader)
    next(batch_iter)
    start = time.perf_counter()
    loaded = 0
    for _ in range(batches):
        try:
            images, _ = next(batch_iter)
        except StopIteration:
            batch_iter = iter(loader)
            images, _ = next(batch_iter)
        loaded += len(images)
    seconds = time.perf_counter() - start
    del batch_iter  # the workers exit and are waited for: their CPU time counts from here
    cpu = cpu_seconds() - cpu_start
    return {"bench": "loader", "workers": workers, "batch_size": batch_size, "images_timed": loaded,
            "images_per_second": loaded / seconds,
            "images_per_second_per_worker": loaded / seconds / max(workers, 1),
            "cpu_seconds_per_image": cpu / (loaded + batch_size), "dataset_images": len(dataset)}
