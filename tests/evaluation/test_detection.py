"""COCO box AP: known values and agreement with a direct pycocotools call."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from itersg.evaluation.detection import BOX_AP_KEYS, CocoBoxEvaluator


def evaluate(images):
    """images: (image_id, gt_boxes, gt_labels, boxes, labels, scores) tuples."""
    evaluator = CocoBoxEvaluator()
    for image in images:
        evaluator.add(*image)
    return evaluator.summarize()


def arr(values, dtype=np.float32):
    return np.array(values, dtype=dtype).reshape(-1, 4) if dtype == np.float32 else np.array(values, dtype)


def test_perfect_predictions_give_100():
    gt_boxes = arr([[0, 0, 10, 10], [50, 50, 150, 130], [0, 0, 400, 300]])
    labels = np.array([3, 7, 0])
    result = evaluate([(1, gt_boxes, labels, gt_boxes, labels, np.array([.9, .8, .7], np.float32))])
    assert set(result) == set(BOX_AP_KEYS)
    assert result == pytest.approx({key: 100.0 for key in BOX_AP_KEYS})


def test_a_box_with_iou_072_matches_only_thresholds_up_to_07():
    gt = arr([[0, 0, 10, 10]])
    prediction = (arr([[0, 0, 10, 7.2]]), np.array([2]), np.array([.5], np.float32))
    result = evaluate([(5, gt, np.array([2]), *prediction)])
    assert result["AP50"] == pytest.approx(100)
    assert result["AP75"] == pytest.approx(0)
    assert result["AP"] == pytest.approx(50)  # matched at 0.50 .. 0.70: 5 of 10 thresholds
    assert result["APs"] == pytest.approx(50)  # area 100 < 32**2
    assert math.isnan(result["APm"]) and math.isnan(result["APl"])  # no GT of that size


def test_wrong_class_images_without_detections_and_classes_without_gt():
    gt = arr([[0, 0, 10, 10], [20, 20, 40, 40]])
    images = [
        (1, gt, np.array([1, 2]), gt[:1], np.array([1]), np.array([.9], np.float32)),  # finds 1 of 2
        (2, gt, np.array([1, 1]), arr([]), np.zeros(0, np.int64), np.zeros(0, np.float32)),  # nothing
        (3, arr([]), np.zeros(0, np.int64), gt, np.array([9, 9]), np.array([.5, .4], np.float32)),  # no GT
    ]
    result = evaluate(images)
    assert 0 < result["AP"] < 100
    assert result == pytest.approx(direct_pycocotools(images), nan_ok=True)


def test_no_detection_at_all():
    gt = arr([[0, 0, 10, 10]])
    result = evaluate([(1, gt, np.array([1]), arr([]), np.zeros(0, np.int64), np.zeros(0, np.float32))])
    assert result["AP"] == 0 and result["APs"] == 0
    assert math.isnan(result["APm"]) and math.isnan(result["APl"])


def direct_pycocotools(images):
    """The same evaluation written directly against pycocotools (GT xywh, 0-based ids, iscrowd 0)."""
    annotations, detections, categories = [], [], set()
    for image_id, gt_boxes, gt_labels, boxes, labels, scores in images:
        for (x1, y1, x2, y2), label in zip(gt_boxes.tolist(), gt_labels.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": 0})
        for (x1, y1, x2, y2), label, score in zip(boxes.tolist(), labels.tolist(), scores.tolist()):
            detections.append({"image_id": image_id, "category_id": label,
                               "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
        categories.update(gt_labels.tolist())
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": [{"id": image[0]} for image in images], "annotations": annotations,
                        "categories": [{"id": c} for c in sorted(categories)]}
        coco.createIndex()
        coco_eval = COCOeval(coco, coco.loadRes(detections), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return {key: v * 100 if v >= 0 else float("nan") for key, v in zip(BOX_AP_KEYS, coco_eval.stats)}


@pytest.mark.parametrize(("seed", "classes", "max_detections", "min_ap50"),
                         [(0, 5, 15, 10), (1, 150, 100, 1), (2, 20, 300, 1)])
def test_random_detections_agree_with_pycocotools(seed, classes, max_detections, min_ap50):
    rng = np.random.default_rng(seed)
    images = []
    for image_id in range(1, 31):
        n, m = rng.integers(0, 8), rng.integers(0, max_detections)
        xy = rng.uniform(0, 300, (n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(4, 200, (n, 2))], 1).astype(np.float32).round(1)
        gt_labels = rng.integers(0, classes, n)
        pick = rng.integers(0, max(n, 1), m)
        boxes = gt[pick] + rng.normal(0, 6, (m, 4)).astype(np.float32) if n else np.zeros((m, 4), np.float32)
        labels = np.where(rng.random(m) < .8, gt_labels[pick] if n else 0, rng.integers(0, classes, m))
        images.append((image_id, gt, gt_labels, boxes.astype(np.float32), labels,
                       rng.random(m).astype(np.float32)))
    result = evaluate(images)
    assert min_ap50 < result["AP50"] < 100  # many random detections per class lower AP50
    # identical but for the last bits of the final mean (a different summation order): 1e-12 percent
    assert result == pytest.approx(direct_pycocotools(images), abs=1e-12, rel=0, nan_ok=True)
