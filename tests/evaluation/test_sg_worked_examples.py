"""Worked examples and micro-tests of the reference evaluator's conventions, computed by hand (worked_examples.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from oracle import oracle_scores
from worked_examples import (
    EXPECTED,
    EXPECTED_PER_CLASS_ISG,
    NUM_PREDICATES,
    ZERO_SHOT_1BASED,
    all_images,
    dist,
    image,
    image_a,
    image_b,
    image_c,
    image_d,
)

from itersg.evaluation.sg_metrics import RECALL_KS, box_iou, scene_graph_scores, top_candidates

ZERO_SHOT = ZERO_SHOT_1BASED - 1
SHARED_ZERO_SHOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "vg" / "zeroshot_triplet.pytorch"


def scores_of(images, zero_shot=ZERO_SHOT, convention="isg"):
    return scene_graph_scores(images, NUM_PREDICATES, zero_shot, convention)


@pytest.mark.parametrize("scorer", ["fast", "oracle"])
def test_dataset_level_numbers_of_images_a_to_d(scorer):
    if scorer == "fast":
        sgdet = scores_of(all_images()).sgdet()
    else:
        sgdet = oracle_scores(all_images(), NUM_PREDICATES, ZERO_SHOT)
    for name, values in EXPECTED.items():
        for k, expected in zip(RECALL_KS, values):
            assert sgdet[f"{name}@{k}"] == pytest.approx(expected, abs=1e-6), f"{name}@{k}"
        for k in RECALL_KS:
            assert sgdet[f"SGMeanRecall@{k}"] == sgdet[f"mR@{k}"]
    assert len([key for key in sgdet if "@" in key]) == 3 * 8


def test_per_predicate_values_of_images_a_to_d():
    scores = scores_of(all_images())
    for k, expected in EXPECTED_PER_CLASS_ISG.items():
        isg = scores.per_predicate_isg[k]
        assert {c: isg[c] for c in expected} == pytest.approx(expected, abs=1e-12)
        assert np.count_nonzero(isg) == sum(v > 0 for v in expected.values())  # the other classes are 0
        corrected = scores.per_predicate_corrected[k]
        assert corrected[0] == pytest.approx(0.5)  # "above": mean(A 1/1, C 0/1)
        assert {c: corrected[c] for c in expected if c != 0} == pytest.approx(
            {c: v for c, v in expected.items() if c != 0})
        assert corrected.sum() / NUM_PREDICATES == pytest.approx(scores.mean_recall_corrected[k])
    assert scores.num_images_counted == 4
    assert scores.num_images_zero_shot == 1


@pytest.mark.skipif(not SHARED_ZERO_SHOT.exists(), reason="shared/data/vg not available")
def test_with_the_real_zero_shot_file():
    import torch

    zero_shot = torch.load(SHARED_ZERO_SHOT, weights_only=True).numpy() - 1
    sgdet = scores_of(all_images(), zero_shot).sgdet()
    assert [sgdet[f"zR@{k}"] for k in RECALL_KS] == pytest.approx([2 / 3] * 3, abs=1e-12)


def test_single_images():
    a = scores_of([image_a()])
    assert a.recall == {20: 0.75, 50: 0.75, 100: 0.75}  # r1 missed: row 1's argmax is 3
    assert a.ng_recall == {20: 1.0, 50: 1.0, 100: 1.0}
    assert math.isnan(a.zero_shot_recall[20])
    assert a.per_predicate_isg[20][0] == pytest.approx(0.8)  # (3 + 1) / (4 + 1)
    c = scores_of([image_c()])
    assert c.recall[100] == 0.75 and c.ng_recall[100] == 1.0
    assert c.zero_shot_recall[100] == pytest.approx(2 / 3)
    assert c.per_predicate_isg[20][0] == pytest.approx(0.6)
    d = scores_of([image_d()])
    assert d.recall[20] == 1.0 and d.ng_recall[100] == 0.0  # ng truncation at 100 candidates


def test_no_re_sorting_and_k_cutoff():
    b = scores_of([image_b()])
    assert b.recall == {20: 0.0, 50: 1.0, 100: 1.0}  # the match is row 25; rows are not re-sorted
    assert b.ng_recall == {20: 1.0, 50: 1.0, 100: 1.0}
    gt, pred = image_b()
    pairs = pred["rel_pairs"]
    triplet = pred["scores"][pairs[:, 0]] * pred["scores"][pairs[:, 1]] * pred["rel_scores"][:, :-1].max(1)
    order = np.argsort(-triplet, kind="stable")  # what an evaluator that re-sorts would do: row 24 first
    resorted = dict(pred, rel_pairs=pairs[order], rel_scores=pred["rel_scores"][order])
    assert scores_of([(gt, resorted)]).recall[20] == 1.0


def test_iou_conventions():
    gt_box = np.array([[0, 0, 10, 10]], np.float32)
    pred_box = np.array([[0, 0, 10, 4.8]], np.float32)
    assert box_iou(gt_box, pred_box, "isg")[0, 0] == pytest.approx(0.48, abs=1e-6)
    assert box_iou(gt_box, pred_box, "sgb")[0, 0] == pytest.approx(0.5273, abs=1e-4)
    assert box_iou(gt_box, np.array([[0, 0, 10, 5]], np.float32))[0, 0] == 0.5
    assert box_iou(gt_box, np.array([[20, 20, 30, 30]], np.float32), "isg")[0, 0] == 0.0
    assert box_iou(gt_box, pred_box).dtype == np.float32
    case = image([[0, 0, 10, 10], [20, 0, 30, 10]], [1, 2], [[0, 1, 4]],
                 [[0, 0, 10, 4.8], [20, 0, 30, 10]], [1, 2], [1, 1], [[0, 1]], [dist({4: .9})])
    assert scores_of([case], convention="isg").recall[20] == 0.0
    assert scores_of([case], convention="sgb").recall[20] == 1.0
    with pytest.raises(ValueError, match="convention"):
        box_iou(gt_box, pred_box, "coco")


def test_images_without_gt_relations_or_predictions_are_skipped():
    gt_a, pred_a = image_a()
    no_gt = ({**gt_a, "relations": np.zeros((0, 3), np.int64)}, pred_a)
    no_rows = (gt_a, {**pred_a, "rel_pairs": np.zeros((0, 2), np.int64),
                      "rel_scores": np.zeros((0, NUM_PREDICATES + 1), np.float32)})
    base = scores_of(all_images()).sgdet()
    for extra in (no_gt, no_rows):
        with_extra = scores_of([*all_images()[:2], extra, *all_images()[2:]])
        assert with_extra.sgdet() == base
        assert with_extra.num_images_counted == 4


def test_zero_shot_recall_averages_only_images_with_zero_shot_gt():
    assert scores_of([image_a(), image_c()]).zero_shot_recall[100] == pytest.approx(2 / 3)
    no_zero_shot = scores_of([image_a(), image_b(), image_d()])
    assert all(math.isnan(v) for v in no_zero_shot.zero_shot_recall.values())
    assert no_zero_shot.num_images_zero_shot == 0


def test_predicate_count_comes_from_the_caller():
    """A dataset with 5 predicates: rel_scores has 6 columns and the mR denominators are 5."""
    gt = {"boxes": np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32), "labels": np.array([1, 2]),
          "relations": np.array([[0, 1, 4], [1, 0, 0]])}
    rel_scores = np.array([[0, 0, 0, 0, .9, .1], [.2, .3, 0, 0, 0, .5]], np.float32)
    pred = {"boxes": gt["boxes"], "labels": gt["labels"], "scores": np.ones(2, np.float32),
            "rel_pairs": np.array([[0, 1], [1, 0]]), "rel_scores": rel_scores}
    scores = scene_graph_scores([(gt, pred)], 5)
    assert scores.recall[20] == 0.5  # row 1's argmax is predicate 1, GT says 0
    assert scores.mean_recall_corrected[20] == pytest.approx((0 + 1) / 5)
    assert scores.mean_recall_isg[20] == pytest.approx((1 / 3 + 1) / 5)  # slot 0: (1 + 0) / (2 + 1)
    assert scores.ng_recall[20] == 1.0


@pytest.mark.parametrize("shape", [(300, 50), (40, 50), (3, 5), (1, 1), (120, 3)])
@pytest.mark.parametrize("ties", [False, True])
def test_top_candidates_equal_a_full_argsort(shape, ties):
    rng = np.random.default_rng(sum(shape) + ties)
    for _ in range(20):
        scores = rng.random(shape, dtype=np.float32)
        if ties:
            scores = np.round(scores * 4) / 4
        expected = np.argsort(-scores.ravel())[:100]
        np.testing.assert_array_equal(top_candidates(scores), expected)
