"""Predictions + ground truth -> the metrics JSON (its ``sgdet``, ``per_predicate_recall``, ``bbox`` parts).

``compute_metrics`` makes one pass over the predictions (a :class:`PredictionsReader` or per-image dicts)
and feeds the scene-graph recalls and the COCO box AP; ``metrics_document`` adds the run's identity
(with ``format`` = ``"itersg-metrics"``; from ``itersg evaluate`` also timing and parameter counts);
``write_metrics_json`` writes it atomically.
Undefined values (NaN, e.g. zR without zero-shot GT) are written as JSON ``null``.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from itersg.errors import UserError
from itersg.evaluation.detection import CocoBoxEvaluator
from itersg.evaluation.predictions import PredictionsReader, check_prediction
from itersg.evaluation.sg_metrics import RECALL_KS, SceneGraphRecall
from itersg.files import write_text_atomic

GroundTruth = Mapping[int, Mapping[str, Any]]
METRICS_FORMAT = "itersg-metrics"  # the document's ``format``: marks a metrics JSON as written by itersg


def _ground_truth_arrays(gt: Mapping[str, Any], image_id: int,
                         num_predicates: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GT boxes [N, 4] float32, labels [N] int64, relations [G, 3] int64, checked."""
    boxes = np.asarray(gt["boxes"], dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(gt["labels"], dtype=np.int64).reshape(-1)
    relations = np.asarray(gt["relations"], dtype=np.int64).reshape(-1, 3)
    problem = None
    if len(boxes) != len(labels):
        problem = f"{len(boxes)} boxes but {len(labels)} labels"
    elif len(labels) and labels.min() < 0:
        problem = "an object label is negative"
    elif len(relations) and (relations[:, :2].min() < 0 or relations[:, :2].max() >= len(boxes)):
        problem = "a relation refers to an object that does not exist"
    elif len(relations) and (relations[:, 2].min() < 0 or relations[:, 2].max() >= num_predicates):
        problem = f"a relation predicate is outside 0..{num_predicates - 1} (the predictions' predicates)"
    if problem:
        raise UserError(f"ground truth of image {image_id}: {problem}; check the dataset files and that "
                        f"the predictions were made on this dataset")
    return boxes, labels, relations


def _prediction_records(predictions: PredictionsReader | Iterable[Mapping], ground_truth: GroundTruth,
                        num_object_classes: int) -> tuple[Iterable[Mapping], int | None, str]:
    """(validated records, number of predicates or None if unknown, source) for a reader or dicts."""
    if isinstance(predictions, PredictionsReader):
        predictions.check_image_ids(ground_truth.keys(), predictions.split)
        return predictions, predictions.num_predicates, str(predictions.path)
    records = list(predictions)
    if not records:
        return records, None, "predictions"
    first = records[0].get("rel_scores")
    if first is None or np.ndim(first) != 2:
        raise UserError("predictions: field 'rel_scores' of the first image is missing or not [P, C + 1]")
    num_predicates = int(np.shape(first)[1]) - 1
    checked = [check_prediction(r, num_predicates, num_object_classes) for r in records]
    return checked, num_predicates, "predictions"


def compute_metrics(predictions: PredictionsReader | Iterable[Mapping], ground_truth: GroundTruth,
                    zero_shot_triplets_1based: np.ndarray, predicate_names: Sequence[str], *,
                    iou_convention: str = "isg", num_object_classes: int = 150,
                    allow_missing: bool = False) -> dict[str, Any]:
    """All sgdet metrics and the box AP of one predictions set.

    Args:
        predictions: an open :class:`PredictionsReader`, or per-image dicts with the contract's fields.
        ground_truth: {image_id: {"boxes" [N, 4] xyxy original pixels, "labels" [N] 0-based,
            "relations" [G, 3] (subject index, object index, 0-based predicate)}} of the split; must
            cover every predicted image.
        zero_shot_triplets_1based: [Z, 3] (subject class, object class, predicate), 1-based as stored.
        predicate_names: C names, index = 0-based predicate (C = rel_scores columns - 1).
        iou_convention: "isg" (reference, continuous) or "sgb" (+1 pixel).
        num_object_classes: label range checked for dict predictions (a reader uses its file's value).
        allow_missing: score only the predicted images when some images of the split have no
            predictions (an evaluation cut short); without it that is an error.

    Returns:
        {"num_images": int (images scored), "images": {"expected", "predicted", "counted",
        "zero_shot_gt"} (images of the split, with predictions, scored, and scored images with at least
        one zero-shot GT triplet), "sgdet": {...}, "per_predicate_recall": {"20": {name: recall}, ...},
        "bbox": {"AP": ..., ...}}. Per-predicate recalls use the corrected convention (their mean is
        ``mR_corrected``); a predicate without GT gets 0.0, as in the mean.
    """
    records, num_predicates, source = _prediction_records(predictions, ground_truth, num_object_classes)
    num_predicates = len(predicate_names) if num_predicates is None else num_predicates
    if len(predicate_names) != num_predicates:
        raise UserError(f"{source}: the predictions have {num_predicates} predicates but the dataset names "
                        f"{len(predicate_names)}; evaluate with the dataset the model was trained on")
    zero_shot = np.asarray(zero_shot_triplets_1based, dtype=np.int64).reshape(-1, 3) - 1
    if zero_shot.size and zero_shot.min() < 0:
        raise UserError("zero-shot triplets must be 1-based (subject class, object class, predicate)")
    recall = SceneGraphRecall(num_predicates, zero_shot, iou_convention)
    boxes_ap = CocoBoxEvaluator()
    clipper = BoxClipper()
    zero_shot_set = {tuple(triplet) for triplet in zero_shot.tolist()}
    seen: set[int] = set()
    zero_shot_images = 0
    for record in records:
        image_id = int(record["image_id"])
        if image_id in seen:
            raise UserError(f"{source}: image {image_id} appears more than once")
        seen.add(image_id)
        if image_id not in ground_truth:
            raise UserError(f"{source}: image {image_id} is not in the ground truth of this split; "
                            f"evaluate with the split the predictions were made for")
        gt_boxes, gt_labels, gt_relations = _ground_truth_arrays(ground_truth[image_id], image_id,
                                                                 num_predicates)
        record = clipper.clip(record, ground_truth[image_id])
        recall.add(gt_boxes, gt_labels, gt_relations, record["boxes"], record["labels"], record["scores"],
                   record["rel_pairs"], record["rel_scores"])
        boxes_ap.add(image_id, gt_boxes, gt_labels, record["boxes"], record["labels"], record["scores"])
        gt_triplets = zip(gt_labels[gt_relations[:, 0]].tolist(), gt_labels[gt_relations[:, 1]].tolist(),
                          gt_relations[:, 2].tolist())
        zero_shot_images += any(triplet in zero_shot_set for triplet in gt_triplets)
    _check_coverage(ground_truth.keys() - seen, len(ground_truth), source, allow_missing)
    clipper.report(source)
    scores = recall.summarize()
    per_predicate = {str(k): dict(zip(predicate_names, scores.per_predicate_corrected[k].tolist()))
                     for k in RECALL_KS}
    images = {"expected": len(ground_truth), "predicted": len(seen), "counted": len(seen),
              "zero_shot_gt": zero_shot_images}
    return {"num_images": len(seen), "images": images, "sgdet": scores.sgdet(),
            "per_predicate_recall": per_predicate, "bbox": boxes_ap.summarize()}


class BoxClipper:
    """Predicted boxes as the model's post-processing leaves them: inside the image and not empty.

    ``itersg evaluate`` writes such boxes (detectron2's ``detector_postprocess``, as the reference);
    a predictions file from elsewhere may hold negative, inverted or huge ones. Those are clipped to
    [0, W] x [0, H], empty ones are dropped with the relation rows that use them, and ``report``
    warns once (one line) with the counts. Images whose ground truth has no size are left as they are.
    """

    def __init__(self) -> None:
        self.boxes = 0
        self.images: list[int] = []

    def clip(self, record: Mapping[str, Any], gt: Mapping[str, Any]) -> Mapping[str, Any]:
        """``record`` unchanged if its boxes are fine, else a copy with clipped boxes and valid rows."""
        if "width" not in gt or "height" not in gt or not len(record["boxes"]):
            return record
        boxes = np.asarray(record["boxes"], dtype=np.float32)
        limits = np.array([gt["width"], gt["height"], gt["width"], gt["height"]], dtype=np.float32)
        clipped = np.clip(boxes, 0, limits)
        valid = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        changed = (clipped != boxes).any(axis=1) | ~valid
        if not changed.any():
            return record
        self.boxes += int(changed.sum())
        self.images.append(int(record["image_id"]))
        new_index = np.cumsum(valid) - 1
        pairs = np.asarray(record["rel_pairs"])
        rows = valid[pairs].all(axis=1) if len(pairs) else np.zeros(0, dtype=bool)
        return {**record, "boxes": clipped[valid], "labels": record["labels"][valid],
                "scores": record["scores"][valid], "rel_pairs": new_index[pairs[rows]],
                "rel_scores": record["rel_scores"][rows], "triplet_scores": record["triplet_scores"][rows]}

    def report(self, source: str) -> None:
        """One warning line if any box had to be clipped or dropped."""
        if self.boxes:
            warnings.warn(f"{source}: {self.boxes} predicted boxes in {len(self.images)} images lay outside "
                          f"their image, were inverted or empty (first: image {self.images[0]}); they were "
                          "clipped to the image and the empty ones dropped with their relations, as the "
                          "model's post-processing does", stacklevel=3)


def _check_coverage(missing: set[int], expected: int, source: str, allow_missing: bool) -> None:
    """A predictions file that misses images of the split scores only part of it: an error unless allowed."""
    if not missing:
        return
    first = ", ".join(str(i) for i in sorted(missing)[:5])
    message = (f"{source}: {len(missing)} of the {expected} images of the split have no predictions "
               f"(first: {first})")
    if not allow_missing:
        raise UserError(f"{message}; the evaluation was cut short or ran on another split: run `itersg evaluate` "
                        "again, or pass --allow-missing to score only the predicted images")
    warnings.warn(f"{message}; scoring the {expected - len(missing)} predicted images only", stacklevel=3)


def metrics_document(*, variant: str, iteration: int, split: str, metrics: Mapping[str, Any],
                     timing: Mapping[str, Any] | None = None,
                     params: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The metrics JSON of a successful evaluation (``metrics`` = the output of compute_metrics)."""
    document: dict[str, Any] = {"format": METRICS_FORMAT, "variant": variant, "iteration": int(iteration),
                                "split": split, "num_images": int(metrics["num_images"]),
                                "images": dict(metrics["images"]), "status": "ok"}
    document.update({key: metrics[key] for key in ("sgdet", "per_predicate_recall", "bbox")})
    if timing is not None:
        document["timing"] = dict(timing)
    if params is not None:
        document["params"] = dict(params)
    return document


def failed_metrics_document(*, variant: str, iteration: int, error: str) -> dict[str, Any]:
    """The metrics JSON of an evaluation that failed."""
    return {"variant": variant, "iteration": int(iteration), "status": "failed", "error": error}


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None, NumPy scalars -> Python numbers, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics_json(path: str | os.PathLike, document: Mapping[str, Any]) -> None:
    """Write ``document`` as indented JSON, atomically (temp file in the same directory + rename)."""
    write_text_atomic(path, json.dumps(_json_safe(document), indent=2, allow_nan=False) + "\n")
