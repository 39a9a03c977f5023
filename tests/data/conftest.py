"""Fixtures: a tiny hand-built VG150 folder with known answers, and a small synthetic dataset."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from itersg.data.synth import generate


def write_vg(root: Path, *, images: list[dict], split: list[int], boxes: list[list[list[int]]],
             labels: list[list[int]], relations: list[list[tuple[int, int, int]]], corrupted: bool = True) -> Path:
    """A VG150 folder from per-image lists (boxes cxcywh at 1024, labels/predicates 1-based, local indices)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "VG_100K").mkdir(exist_ok=True)
    flat_boxes, flat_labels, flat_rel, flat_pred = [], [], [], []
    first_box, last_box, first_rel, last_rel = [], [], [], []
    for img_boxes, img_labels, img_rels in zip(boxes, labels, relations, strict=True):
        start = len(flat_boxes)
        first_box.append(start if img_boxes else -1)
        last_box.append(start + len(img_boxes) - 1 if img_boxes else -1)
        flat_boxes += img_boxes
        flat_labels += img_labels
        first_rel.append(len(flat_pred) if img_rels else -1)
        last_rel.append(len(flat_pred) + len(img_rels) - 1 if img_rels else -1)
        flat_rel += [[start + s, start + o] for s, o, _ in img_rels]
        flat_pred += [p for _, _, p in img_rels]
    with h5py.File(root / "VG-SGG-with-attri.h5", "w") as h5:
        h5["split"] = np.asarray(split, dtype=np.int32)
        for name, values in (("img_to_first_box", first_box), ("img_to_last_box", last_box),
                             ("img_to_first_rel", first_rel), ("img_to_last_rel", last_rel)):
            h5[name] = np.asarray(values, dtype=np.int32)
        h5["labels"] = np.asarray(flat_labels, dtype=np.int64).reshape(-1, 1)
        h5["boxes_1024"] = np.asarray(flat_boxes, dtype=np.int32).reshape(-1, 4)
        h5["relationships"] = np.asarray(flat_rel, dtype=np.int32).reshape(-1, 2)
        h5["predicates"] = np.asarray(flat_pred, dtype=np.int64).reshape(-1, 1)
    records = list(images)
    if corrupted:
        records.insert(1, {"image_id": 1592, "width": 10, "height": 10})
    (root / "image_data.json").write_text(json.dumps(records))
    names = {"label_to_idx": {f"c{i}": i for i in range(1, 151)},
             "predicate_to_idx": {f"p{i}": i for i in range(1, 51)}}
    (root / "VG-SGG-dicts-with-attri.json").write_text(json.dumps(names))
    torch.save(torch.tensor([[1, 2, 3]]), root / "zeroshot_triplet.pytorch")
    for record in images:
        Image.new("RGB", (record["width"], record["height"]), (90, 120, 150)).save(
            root / "VG_100K" / f"{record['image_id']}.jpg")
    return root


@pytest.fixture
def tiny_vg(tmp_path) -> Path:
    """Five images: 2 train(+val), 1 without relations, 1 test, 1 without boxes (all known answers)."""
    images = [{"image_id": i, "width": w, "height": h} for i, w, h in
              ((1, 800, 600), (2, 512, 1024), (3, 300, 300), (4, 1024, 768), (5, 640, 480))]
    return write_vg(
        tmp_path / "vg",
        images=images,
        split=[0, 0, 0, 2, 0],
        # cx, cy, w, h at 1024; odd widths make x1 = cx - w/2 non-integer (truncated in the int h5)
        boxes=[[[101, 201, 51, 41], [500, 400, 200, 100]], [[300, 300, 100, 100], [600, 600, 50, 50]],
               [[10, 10, 5, 5]], [[512, 384, 1024, 768], [100, 100, 20, 20]], []],
        labels=[[1, 150], [3, 4], [7], [10, 11], []],
        relations=[[(0, 1, 1), (0, 1, 1), (0, 1, 50)], [(1, 0, 20)], [], [(0, 1, 5), (0, 1, 5)], []],
    )


@pytest.fixture(scope="session")
def synth_vg(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "vg", images=160, seed=3, image_size=96)
