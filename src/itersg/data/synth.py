"""A synthetic, learnable dataset in the exact VG150 file format (the demo's and the tests' data).

Objects are coloured shapes (class = colour x shape, 12 classes) on a noisy grey background. Each
unordered pair of objects gets one predicate from fixed rules on geometry and appearance, checked in
this order: inside, overlapping, same colour as (same class), bigger than, near, beside, above
(all invariant to the horizontal flip of the training augmentation). That order makes
the predicate distribution long-tailed like VG's (above / beside common, near and inside rare). Triplets
whose subject is yellow and whose object is a triangle never appear in training: those seen in
the test split form the zero-shot list. The files (h5 datasets and dtypes, dicts keys, image_data
records, zero-shot tensor) are those of VG150, so the loader reads them through the same code path.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, ImageDraw

from itersg.data.vg150 import (
    BOX_SCALE,
    CORRUPTED_IMAGE_IDS,
    DICTS_FILE,
    H5_FILE,
    IMAGE_DATA_FILE,
    ZERO_SHOT_FILE,
)
from itersg.files import holds_only, output_mark

SHAPES = ("square", "circle", "triangle")
COLOURS = {"red": (210, 45, 45), "green": (40, 160, 60), "blue": (45, 85, 215), "yellow": (230, 200, 35)}
CLASSES = tuple(f"{colour} {shape}" for shape in SHAPES for colour in COLOURS)
PREDICATES = ("above", "beside", "bigger than", "same colour as", "near", "overlapping", "inside")
MAX_RELATIONS_PER_IMAGE = 6
TRAIN_FRACTION = 0.7
SYNTH_FORMAT = "itersg-synthetic-vg150"  # the h5's ``format`` attribute: marks a folder as written by generate
DATASET_NAMES = (H5_FILE, DICTS_FILE, IMAGE_DATA_FILE, ZERO_SHOT_FILE, "VG_100K")


@dataclass(frozen=True)
class SynthObject:
    """One shape: class index (0-based) and box x1, y1, x2, y2 in pixels."""

    label: int
    box: tuple[float, float, float, float]

    @property
    def colour(self) -> str:
        return CLASSES[self.label].split()[0]

    @property
    def shape(self) -> str:
        return CLASSES[self.label].split()[1]

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


def _contains(outer: SynthObject, inner: SynthObject) -> bool:
    o, i = outer.box, inner.box
    return o[0] <= i[0] and o[1] <= i[1] and i[2] <= o[2] and i[3] <= o[3] and outer.area > inner.area


def _overlap(a: SynthObject, b: SynthObject) -> bool:
    return min(a.box[2], b.box[2]) > max(a.box[0], b.box[0]) and min(a.box[3], b.box[3]) > max(a.box[1], b.box[1])


def relation(a: int, b: int, objects: list[SynthObject], image_side: float) -> tuple[int, int, int]:
    """(subject, object, predicate) for the unordered pair (a, b), by the rules of the module docstring."""
    oa, ob = objects[a], objects[b]
    (ax, ay), (bx, by) = oa.centre, ob.centre
    # Training flips images horizontally (as the reference): nothing may depend on left/right, so the
    # subject of a symmetric predicate is the upper object.
    upper, lower = (a, b) if (ay, -oa.area) <= (by, -ob.area) else (b, a)
    if _contains(ob, oa) or _contains(oa, ob):
        inner, outer = (a, b) if _contains(ob, oa) else (b, a)
        return inner, outer, PREDICATES.index("inside")
    if _overlap(oa, ob):
        return upper, lower, PREDICATES.index("overlapping")
    if oa.colour == ob.colour and oa.shape == ob.shape:
        return upper, lower, PREDICATES.index("same colour as")
    if max(oa.area, ob.area) > 3.5 * min(oa.area, ob.area):
        big, small = (a, b) if oa.area > ob.area else (b, a)
        return big, small, PREDICATES.index("bigger than")
    if np.hypot(ax - bx, ay - by) < 0.25 * image_side:
        return upper, lower, PREDICATES.index("near")
    if abs(ax - bx) >= abs(ay - by):
        return upper, lower, PREDICATES.index("beside")
    return upper, lower, PREDICATES.index("above")


def is_held_out(subject_label: int, object_label: int) -> bool:
    """Triplets kept out of training: a yellow subject with a triangle object (any predicate)."""
    return CLASSES[subject_label].startswith("yellow") and CLASSES[object_label].endswith("triangle")


def _random_objects(rng: np.random.Generator, width: int, height: int) -> list[SynthObject]:
    count = 1 if rng.random() < 0.04 else int(rng.integers(2, 6))
    side = min(width, height)
    objects: list[SynthObject] = []
    for _ in range(count):
        label = int(rng.integers(len(CLASSES)))
        if objects and rng.random() < 0.06:  # a small object inside an earlier, bigger one
            host = objects[int(rng.integers(len(objects)))].box
            host_w, host_h = host[2] - host[0], host[3] - host[1]
            w = h = max(4.0, min(host_w, host_h) * rng.uniform(0.3, 0.45))
            x1 = rng.uniform(host[0] + 1, host[2] - w - 1) if host_w > w + 2 else host[0]
            y1 = rng.uniform(host[1] + 1, host[3] - h - 1) if host_h > h + 2 else host[1]
        else:
            w = side * rng.uniform(0.1, 0.28)
            h = w * rng.uniform(0.8, 1.25)
            x1, y1 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        objects.append(SynthObject(label, (x1, y1, min(x1 + w, width), min(y1 + h, height))))
    return objects


def _draw(objects: list[SynthObject], width: int, height: int, rng: np.random.Generator) -> bytes:
    background = rng.normal(128, 12, size=(height, width, 1)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(np.repeat(background, 3, axis=2))
    draw = ImageDraw.Draw(image)
    for obj in sorted(objects, key=lambda o: -o.area):  # small shapes stay visible on top of big ones
        x1, y1, x2, y2 = obj.box
        colour = COLOURS[obj.colour]
        if obj.shape == "square":
            draw.rectangle((x1, y1, x2, y2), fill=colour)
        elif obj.shape == "circle":
            draw.ellipse((x1, y1, x2, y2), fill=colour)
        else:
            draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


@dataclass
class _Arrays:
    """The flat VG150 arrays being built."""

    split: list[int]
    first_box: list[int]
    last_box: list[int]
    first_rel: list[int]
    last_rel: list[int]
    labels: list[int]
    boxes_1024: list[list[int]]
    boxes_512: list[list[int]]
    relationships: list[list[int]]
    predicates: list[int]


def _scaled_cxcywh(box: tuple[float, ...], longer_side: int, scale: int) -> list[int]:
    factor = scale / longer_side
    x1, y1, x2, y2 = (v * factor for v in box)
    return [round((x1 + x2) / 2), round((y1 + y2) / 2), max(1, round(x2 - x1)), max(1, round(y2 - y1))]


def _add_image(arrays: _Arrays, objects: list[SynthObject], triplets: list[tuple[int, int, int]],
               split: int, longer_side: int) -> None:
    first = len(arrays.labels)
    arrays.split.append(split)
    arrays.first_box.append(first)
    arrays.last_box.append(first + len(objects) - 1)
    for obj in objects:
        arrays.labels.append(obj.label + 1)
        arrays.boxes_1024.append(_scaled_cxcywh(obj.box, longer_side, BOX_SCALE))
        arrays.boxes_512.append(_scaled_cxcywh(obj.box, longer_side, 512))
    if triplets:
        arrays.first_rel.append(len(arrays.predicates))
        arrays.last_rel.append(len(arrays.predicates) + len(triplets) - 1)
    else:
        arrays.first_rel.append(-1)
        arrays.last_rel.append(-1)
    for sub, obj, predicate in triplets:
        arrays.relationships.append([first + sub, first + obj])
        arrays.predicates.append(predicate + 1)


def _write_h5(path: Path, arrays: _Arrays) -> None:
    n_obj = len(arrays.labels)
    with h5py.File(path, "w") as h5:
        h5.attrs["format"] = SYNTH_FORMAT
        for name in ("split", "first_box", "last_box", "first_rel", "last_rel"):
            key = name if name == "split" else f"img_to_{name}"
            h5.create_dataset(key, data=np.asarray(getattr(arrays, name), dtype=np.int32))
        h5.create_dataset("labels", data=np.asarray(arrays.labels, dtype=np.int64).reshape(-1, 1))
        h5.create_dataset("boxes_1024", data=np.asarray(arrays.boxes_1024, dtype=np.int32).reshape(-1, 4))
        h5.create_dataset("boxes_512", data=np.asarray(arrays.boxes_512, dtype=np.int32).reshape(-1, 4))
        h5.create_dataset("relationships", data=np.asarray(arrays.relationships, dtype=np.int32).reshape(-1, 2))
        h5.create_dataset("predicates", data=np.asarray(arrays.predicates, dtype=np.int64).reshape(-1, 1))
        h5.create_dataset("attributes", data=np.zeros((n_obj, 10), dtype=np.int64))
        h5.create_dataset("active_object_mask", data=np.ones((n_obj, 1), dtype=bool))


def _dicts(arrays: _Arrays) -> dict:
    class_counts = np.bincount(np.asarray(arrays.labels) - 1, minlength=len(CLASSES))
    predicate_counts = np.bincount(np.asarray(arrays.predicates, dtype=np.int64) - 1, minlength=len(PREDICATES))
    return {
        "label_to_idx": {name: i + 1 for i, name in enumerate(CLASSES)},
        "idx_to_label": {str(i + 1): name for i, name in enumerate(CLASSES)},
        "predicate_to_idx": {name: i + 1 for i, name in enumerate(PREDICATES)},
        "idx_to_predicate": {str(i + 1): name for i, name in enumerate(PREDICATES)},
        "object_count": {name: int(c) for name, c in zip(CLASSES, class_counts, strict=True)},
        "predicate_count": {name: int(c) for name, c in zip(PREDICATES, predicate_counts, strict=True)},
        "attribute_count": {},
        "idx_to_attribute": {},
        "attribute_to_idx": {},
    }


def _image_triplets(objects: list[SynthObject], side: float, training: bool,
                    rng: np.random.Generator) -> list[tuple[int, int, int]]:
    pairs = [(a, b) for a in range(len(objects)) for b in range(a + 1, len(objects))]
    triplets = [relation(a, b, objects, side) for a, b in pairs]
    if training:
        triplets = [t for t in triplets if not is_held_out(objects[t[0]].label, objects[t[1]].label)]
    if len(triplets) > MAX_RELATIONS_PER_IMAGE:
        chosen = sorted(rng.choice(len(triplets), MAX_RELATIONS_PER_IMAGE, replace=False))
        triplets = [triplets[i] for i in chosen]
    return triplets


def generate(out: str | Path, images: int = 1500, seed: int = 0, image_size: int = 128) -> Path:
    """Write a synthetic VG150-format dataset of ``images`` images to ``out`` (same seed = same bytes)."""
    import torch

    out = Path(out)
    staging = out.parent / f".{out.name}.synth-tmp"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "VG_100K").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    arrays = _Arrays([], [], [], [], [], [], [], [], [], [])
    image_data, zero_shot, image_id = [], set(), 0
    while len(arrays.split) < images:
        image_id += 1
        width, height = image_size, int(image_size * rng.uniform(0.75, 1.0))
        if rng.random() < 0.5:
            width, height = height, width
        record = {"image_id": image_id, "url": f"https://example.invalid/VG_100K/{image_id}.jpg",
                  "width": width, "height": height, "coco_id": None, "flickr_id": None}
        image_data.append(record)
        if image_id in CORRUPTED_IMAGE_IDS:  # listed in image_data.json but not in the h5, as in VG
            continue
        split = 0 if rng.random() < TRAIN_FRACTION else 2
        objects = _random_objects(rng, width, height)
        triplets = _image_triplets(objects, min(width, height), split == 0, rng)
        if split == 2:
            zero_shot |= {(objects[s].label + 1, objects[o].label + 1, p + 1) for s, o, p in triplets
                          if is_held_out(objects[s].label, objects[o].label)}
        (staging / "VG_100K" / f"{image_id}.jpg").write_bytes(_draw(objects, width, height, rng))
        _add_image(arrays, objects, triplets, split, max(width, height))
    _write_h5(staging / H5_FILE, arrays)
    (staging / DICTS_FILE).write_text(json.dumps(_dicts(arrays), indent=1))
    (staging / IMAGE_DATA_FILE).write_text(json.dumps(image_data))
    torch.save(torch.tensor(sorted(zero_shot), dtype=torch.int64).reshape(-1, 3), staging / ZERO_SHOT_FILE)
    _move_into_place(staging, out)
    return out


def is_synthetic_dataset(folder: Path) -> bool:
    """Whether ``folder`` holds a dataset of ``generate`` and nothing else: writing one there loses nothing."""
    return holds_only(folder, DATASET_NAMES) and output_mark(folder / H5_FILE) == SYNTH_FORMAT


def _move_into_place(staging: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for entry in staging.iterdir():
        target = out / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)
    staging.rmdir()
