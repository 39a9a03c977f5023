"""Property tests: the vectorised metrics equal the loop oracle on random data, ties and edge cases."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from oracle import oracle_scores

from itersg.evaluation.bench import synthetic_evaluation_set
from itersg.evaluation.sg_metrics import RECALL_KS, scene_graph_scores

GRID = st.sampled_from([0.0, 2.5, 5.0, 10.0, 20.0])  # coarse coordinates: exact IoU 0.5, ties
SIZES = st.sampled_from([2.5, 5.0, 10.0, 20.0])
TIED_SCORES = st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0])
ANY_SCORE = st.floats(0, 1, width=32)


@st.composite
def boxes(draw, n):
    corners = draw(arrays(np.float32, (n, 2), elements=GRID))
    sizes = draw(arrays(np.float32, (n, 2), elements=SIZES))
    return np.concatenate([corners, corners + sizes], axis=1)


@st.composite
def image_pair(draw, num_classes, num_predicates, tied):
    kind = draw(st.sampled_from(["full"] * 8 + ["no GT relation", "no prediction row", "no GT object"]))
    num_gt = 0 if kind == "no GT object" else draw(st.integers(1, 5))
    gt_boxes = draw(boxes(num_gt))
    gt_labels = draw(arrays(np.int64, num_gt, elements=st.integers(0, num_classes - 1)))
    num_rels = draw(st.integers(1, 8)) if num_gt and kind != "no GT relation" else 0
    relations = draw(arrays(np.int64, (num_rels, 3), elements=st.integers(0, max(num_gt - 1, 0))))
    relations[:, 2] = draw(arrays(np.int64, num_rels, elements=st.integers(0, num_predicates - 1)))
    if num_rels and draw(st.booleans()):
        relations = np.concatenate([relations, relations[:1]])  # a duplicate GT row

    # predicted objects: copies of the GT objects (some shifted or relabelled, some twice) and free boxes
    copies = draw(st.permutations(range(num_gt))) + draw(st.lists(st.integers(0, max(num_gt - 1, 0)),
                                                                  max_size=2 if num_gt else 0))
    copies = copies[: draw(st.integers(0, len(copies)))] if draw(st.booleans()) else copies
    pred_boxes = np.concatenate([gt_boxes[copies], draw(boxes(draw(st.integers(0, 2))))])
    pred_boxes[: len(copies)] += draw(arrays(np.float32, (len(copies), 4), elements=st.sampled_from(
        [0.0, 0.0, 0.0, 2.5, -2.5])))
    num_objects = len(pred_boxes)
    labels = np.concatenate([gt_labels[copies], np.zeros(num_objects - len(copies), np.int64)])
    relabel = draw(arrays(np.bool_, num_objects, elements=st.sampled_from([False, False, True])))
    labels[relabel] = draw(arrays(np.int64, num_objects, elements=st.integers(0, num_classes - 1)))[relabel]
    score = TIED_SCORES if tied else ANY_SCORE
    scores = draw(arrays(np.float32, num_objects, elements=score))

    num_rows = draw(st.one_of(st.integers(1, 12), st.integers(90, 130)))
    num_rows = 0 if num_objects == 0 or kind == "no prediction row" else num_rows
    pairs = draw(arrays(np.int64, (num_rows, 2), elements=st.integers(0, max(num_objects - 1, 0))))
    copy_of = np.full(max(num_gt, 1), -1)
    for position, gt_index in reversed(list(enumerate(copies))):
        copy_of[gt_index] = position
    from_gt = draw(arrays(np.int64, num_rows, elements=st.integers(-1, len(relations) - 1)))  # -1: random
    gt_pairs = copy_of[relations[from_gt, :2]] if len(relations) else np.zeros((num_rows, 2), np.int64)
    use_gt = (from_gt >= 0) & (gt_pairs >= 0).all(1)
    pairs[use_gt] = gt_pairs[use_gt]
    rel_scores = draw(arrays(np.float32, (num_rows, num_predicates + 1), elements=score))
    gt = {"boxes": gt_boxes, "labels": gt_labels, "relations": relations}
    pred = {"boxes": pred_boxes, "labels": labels, "scores": scores, "rel_pairs": pairs,
            "rel_scores": rel_scores}
    return gt, pred


@st.composite
def datasets(draw):
    num_classes = draw(st.integers(1, 3))
    num_predicates = draw(st.sampled_from([1, 2, 4, 7]))
    tied = draw(st.booleans())
    images = draw(st.lists(image_pair(num_classes, num_predicates, tied), min_size=1, max_size=5))
    images = [] if draw(st.sampled_from([False] * 20 + [True])) else images
    zero_shot = draw(arrays(np.int64, (draw(st.integers(0, 6)), 3), elements=st.integers(0, 2)))
    return images, num_predicates, zero_shot


def assert_same_scores(fast, reference, tolerance=1e-9):
    sgdet = fast.sgdet()
    for key, value in sgdet.items():
        if math.isnan(value) or math.isnan(reference[key]):
            assert math.isnan(value) and math.isnan(reference[key]), key
        else:
            assert abs(value - reference[key]) <= tolerance, (key, value, reference[key])
    for k in RECALL_KS:
        np.testing.assert_allclose(fast.per_predicate_isg[k], reference["per_predicate_isg"][k],
                                   rtol=0, atol=tolerance)
        np.testing.assert_allclose(fast.per_predicate_corrected[k], reference["per_predicate_corrected"][k],
                                   rtol=0, atol=tolerance)


@settings(max_examples=150, deadline=None, database=None)
@given(data=datasets(), convention=st.sampled_from(["isg", "sgb"]))
def test_fast_path_equals_the_oracle(data, convention):
    images, num_predicates, zero_shot = data
    fast = scene_graph_scores(images, num_predicates, zero_shot, convention)
    assert_same_scores(fast, oracle_scores(images, num_predicates, zero_shot, convention))


def test_fast_path_equals_the_oracle_on_vg_sized_images():
    """Realistic sizes: 300 rows x 50 predicates, where the top-100 shortcut of ng-R is exercised."""
    images, zero_shot = synthetic_evaluation_set(40, seed=3)
    for convention in ("isg", "sgb"):
        fast = scene_graph_scores(images, 50, zero_shot, convention)
        assert fast.recall[100] > 0 and fast.ng_recall[100] > 0 and fast.zero_shot_recall[100] > 0
        assert_same_scores(fast, oracle_scores(images, 50, zero_shot, convention), tolerance=0)
