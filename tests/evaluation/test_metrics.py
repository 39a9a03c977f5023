"""compute_metrics: the metrics JSON parts from a predictions file or from records."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from worked_examples import EXPECTED, ZERO_SHOT_1BASED, all_images

from itersg.errors import UserError
from itersg.evaluation.metrics import (
    compute_metrics,
    failed_metrics_document,
    metrics_document,
    write_metrics_json,
)
from itersg.evaluation.predictions import PredictionsReader, PredictionsWriter
from itersg.evaluation.sg_metrics import RECALL_KS

NAMES = [f"predicate-{i}" for i in range(50)]


def ground_truth():
    return {pred["image_id"]: gt for gt, pred in all_images()}


def records():
    return [pred for _, pred in all_images()]


def same(a, b):
    """Equal, NaN equal to NaN."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def write_predictions(path, items):
    with PredictionsWriter(path, variant="vovnet39-detr", iteration=10, split="test") as writer:
        for item in items:
            writer.add(item)
    return path


def test_metrics_of_the_worked_examples(tmp_path):
    from_records = compute_metrics(records(), ground_truth(), ZERO_SHOT_1BASED, NAMES)
    with PredictionsReader(write_predictions(tmp_path / "p.h5", records())) as reader:
        from_file = compute_metrics(reader, ground_truth(), ZERO_SHOT_1BASED, NAMES)
    assert same(from_file, from_records)
    assert from_file["num_images"] == 4
    for name, values in EXPECTED.items():
        assert [from_file["sgdet"][f"{name}@{k}"] for k in RECALL_KS] == pytest.approx(values, abs=1e-6)
    per_predicate = from_file["per_predicate_recall"]
    assert list(per_predicate) == ["20", "50", "100"]
    assert list(per_predicate["50"]) == NAMES
    assert per_predicate["20"]["predicate-0"] == 0.5 and per_predicate["50"]["predicate-2"] == 1.0
    assert sum(per_predicate["50"].values()) / 50 == pytest.approx(from_file["sgdet"]["mR_corrected@50"])
    assert set(from_file["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert 0 < from_file["bbox"]["AP50"] <= 100


def test_images_of_the_split_without_predictions_are_an_error_unless_allowed():
    gt = ground_truth()
    gt[99] = gt[1]
    with pytest.raises(UserError, match=r"1 of the 5 images of the split have no predictions \(first: 99\)"):
        compute_metrics(records(), gt, ZERO_SHOT_1BASED, NAMES)
    with pytest.warns(UserWarning, match="scoring the 4 predicted images only"):
        partial = compute_metrics(records(), gt, ZERO_SHOT_1BASED, NAMES, allow_missing=True)
    complete = compute_metrics(records(), ground_truth(), ZERO_SHOT_1BASED, NAMES)
    assert partial["images"] == {**complete["images"], "expected": 5}
    assert complete["images"]["expected"] == complete["images"]["counted"] == complete["num_images"] == 4
    zero_shot = {tuple(t) for t in (np.asarray(ZERO_SHOT_1BASED) - 1).tolist()}
    with_zero_shot = [i for i, g in ground_truth().items()
                      if any((g["labels"][s], g["labels"][o], p) in zero_shot for s, o, p in g["relations"])]
    assert complete["images"]["zero_shot_gt"] == len(with_zero_shot) > 0
    assert same({k: v for k, v in partial.items() if k != "images"},
                {k: v for k, v in complete.items() if k != "images"})


def test_errors(tmp_path):
    gt = ground_truth()
    del gt[3]
    with pytest.raises(UserError, match="predictions: image 3 is not in the ground truth"):
        compute_metrics(records(), gt, ZERO_SHOT_1BASED, NAMES)
    with PredictionsReader(write_predictions(tmp_path / "p.h5", records())) as reader, \
            pytest.raises(UserError, match=r"p.h5: field 'image_ids' holds image 3"):
        compute_metrics(reader, gt, ZERO_SHOT_1BASED, NAMES)
    with pytest.raises(UserError, match="have 50 predicates but the dataset names 3"):
        compute_metrics(records(), ground_truth(), ZERO_SHOT_1BASED, NAMES[:3])
    with pytest.raises(UserError, match="appears more than once"):
        compute_metrics(records() + records()[:1], ground_truth(), ZERO_SHOT_1BASED, NAMES)
    bad_gt = ground_truth()
    bad_gt[2] = dict(bad_gt[2], relations=np.array([[0, 5, 1]]))
    with pytest.raises(UserError, match="ground truth of image 2: a relation refers to an object"):
        compute_metrics(records(), bad_gt, ZERO_SHOT_1BASED, NAMES)
    bad_record = dict(records()[1], rel_pairs=np.array([[0, 7]] * 25))
    with pytest.raises(UserError, match="image 2: field 'rel_pairs' has object indices outside"):
        compute_metrics([records()[0], bad_record], ground_truth(), ZERO_SHOT_1BASED, NAMES)


def test_metrics_json(tmp_path):
    two_images = {k: v for k, v in ground_truth().items() if k in {r["image_id"] for r in records()[:2]}}
    metrics = compute_metrics(records()[:2], two_images, ZERO_SHOT_1BASED, NAMES)  # no zero-shot GT
    document = metrics_document(variant="r101-detr", iteration=5, split="test", metrics=metrics,
                                timing={"s_per_image": 0.1, "batch_size": 8, "device": "cpu",
                                        "warmup_batches": 2, "images_timed": 2},
                                params={"backbone": 1, "total": 3, "trainable": 2})
    path = tmp_path / "out" / "metrics.json"
    write_metrics_json(path, document)
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]
    loaded = json.loads(path.read_text())
    assert list(loaded) == ["format", "variant", "iteration", "split", "num_images", "images", "status", "sgdet",
                            "per_predicate_recall", "bbox", "timing", "params"]
    assert loaded["format"] == "itersg-metrics"
    assert loaded["status"] == "ok" and loaded["num_images"] == 2
    assert loaded["images"] == {"expected": 2, "predicted": 2, "counted": 2, "zero_shot_gt": 0}
    assert loaded["sgdet"]["zR@20"] is None  # NaN is written as null
    assert loaded["sgdet"]["R@20"] == metrics["sgdet"]["R@20"]
    failed = failed_metrics_document(variant="r101-detr", iteration=5, error="CUDA out of memory")
    write_metrics_json(path, failed)
    assert json.loads(path.read_text()) == {"variant": "r101-detr", "iteration": 5, "status": "failed",
                                            "error": "CUDA out of memory"}


def test_boxes_outside_the_image_are_clipped_with_one_warning_and_no_overflow():
    """Negative, huge and inverted predicted boxes are handled as the model's post-processing does.

    The first box reaches far beyond the 100 x 80 image (float32 overflow in its area before the
    fix): clipped, it is the GT box. The inverted one is dropped with the relation row that uses it.
    """
    gt = {1: {"boxes": np.array([[0, 0, 100, 80], [10, 10, 40, 40]], np.float32), "labels": np.array([3, 5]),
              "relations": np.array([[0, 1, 2]]), "width": 100, "height": 80}}
    rel_scores = np.full((2, 51), 0.01, np.float32)
    rel_scores[:, 2] = 0.5
    prediction = {"image_id": 1, "boxes": np.array([[-30, -1e30, 1e30, 3e38], [10, 10, 40, 40], [50, 50, 20, 20]],
                                                   np.float32),
                  "labels": np.array([3, 5, 7]), "scores": np.array([0.9, 0.8, 0.7], np.float32),
                  "rel_pairs": np.array([[2, 1], [0, 1]]), "rel_scores": rel_scores,
                  "triplet_scores": np.array([0.9, 0.8], np.float32)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = compute_metrics([prediction], gt, ZERO_SHOT_1BASED, NAMES)
    assert [(w.category, str(w.message)) for w in caught] == [(UserWarning, (
        "predictions: 2 predicted boxes in 1 images lay outside their image, were inverted or empty (first: "
        "image 1); they were clipped to the image and the empty ones dropped with their relations, as the "
        "model's post-processing does"))]
    assert metrics["sgdet"]["R@20"] == 1.0
