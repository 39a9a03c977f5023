"""An evaluated study on the synthetic dataset for the gallery tests: real predictions files and metrics.

Two variants predict from the ground truth of each test image: ``r101-detr`` copies it (every triplet a
hit), ``vovnet39-detr`` copies it too but on every other image names the wrong predicate and moves the
first object by half its width (misses), so the two disagree there. Their metrics come from
``itersg metrics`` and the prepare summary from ``itersg data prepare``, as in the pipeline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from itersg.cli import main
from itersg.data.synth import generate
from itersg.data.vg150 import VG150Index, image_ground_truth, load_vocabulary
from itersg.evaluation.predictions import PredictionsWriter

VARIANTS = ("r101-detr", "vovnet39-detr")
ITERATION = 600


@dataclass(frozen=True)
class EvaluatedStudy:
    root: Path
    data: Path
    params: Path
    prepare: Path
    metrics: list[Path]


def prediction_from(gt: dict, image_id: int, num_predicates: int, wrong: bool) -> dict:
    """A predictions-file record made from the ground truth; ``wrong`` spoils predicates and one box."""
    boxes = gt["boxes"].copy()
    predicates = gt["relations"][:, 2].copy()
    if wrong:
        predicates = (predicates + 1) % num_predicates
        boxes[0, [0, 2]] = np.minimum(boxes[0, [0, 2]] + (boxes[0, 2] - boxes[0, 0]) / 2, gt["width"])
    rel_scores = np.full((len(predicates), num_predicates + 1), 0.01, dtype=np.float32)
    rel_scores[np.arange(len(predicates)), predicates] = 0.9
    return {"image_id": image_id, "boxes": boxes, "labels": gt["labels"],
            "scores": np.full(len(boxes), 0.8, dtype=np.float32), "rel_pairs": gt["relations"][:, :2],
            "rel_scores": rel_scores,
            "triplet_scores": np.linspace(0.9, 0.1, len(predicates)).astype(np.float32)}


def write_predictions(data: Path, out: Path, variant: str) -> Path:
    index = VG150Index(data, "test", 5, filter_duplicate_rels=False)
    vocabulary = load_vocabulary(data)
    path = out / "predictions.h5"
    with PredictionsWriter(path, variant=variant, iteration=ITERATION, split="test",
                           num_object_classes=len(vocabulary.classes),
                           num_predicates=len(vocabulary.predicates)) as writer:
        for i, image_id in enumerate(index.image_ids):
            wrong = variant != VARIANTS[0] and i % 2 == 1
            writer.add(prediction_from(image_ground_truth(index, i), int(image_id), len(vocabulary.predicates),
                                       wrong))
    return path


def write_evaluated_study(root: Path, images: int = 60, gallery_images: int = 4) -> EvaluatedStudy:
    data = generate(root / "vg", images=images, seed=7, image_size=80)
    prepare = root / "prepare.json"
    assert main(["data", "prepare", "--root", str(data), "--out", str(prepare), "--num-val", "5"]) == 0
    metrics = []
    for variant in VARIANTS:
        out = root / "eval" / variant / str(ITERATION)
        predictions = write_predictions(data, out, variant)
        assert main(["metrics", "--data", str(data), "--predictions", str(predictions), "--num-val", "5",
                     "--out", str(out / "metrics.json")]) == 0
        metrics.append(out / "metrics.json")
    params = root / "params.yaml"
    params.write_text(json.dumps({
        "mode": "full", "data": {"root": str(data), "num_val_images": 5},
        "study": {"variants": list(VARIANTS), "eval_iterations": [ITERATION]}, "train": {"iterations": ITERATION},
        "report": {"gallery": {"images": gallery_images, "seed": 3}}}))
    return EvaluatedStudy(root, data, params, prepare, metrics)
