"""Four worked images A-D (IterativeSG evaluator conventions) and their expected numbers, computed by hand."""

from __future__ import annotations

import numpy as np

NUM_PREDICATES = 50
# 1-based (subject class, object class, predicate) rows: the two zero-shot triplets of the examples,
# (0,0,32) and (1,1,0) once 0-based, plus near misses of other GT triplets (subject and object swapped,
# or another predicate), which must not count.
ZERO_SHOT_1BASED = np.array([[1, 1, 33], [2, 2, 1], [3, 2, 1], [6, 5, 3], [12, 11, 10], [1, 2, 7]],
                            dtype=np.int64)


def dist(probs: dict[int, float], background: float | None = None) -> list[float]:
    """A 51-vector: probability p at predicate column c, background (last column) = 1 - sum p."""
    row = np.zeros(NUM_PREDICATES + 1)
    for column, p in probs.items():
        row[column] = p
    row[NUM_PREDICATES] = 1 - sum(probs.values()) if background is None else background
    return row.tolist()


def image(gt_boxes, gt_labels, gt_rels, boxes, labels, scores, pairs, rel_scores, image_id=0):
    """(GT dict, prediction dict) with the dtypes of the contract."""
    gt = {"boxes": np.array(gt_boxes, np.float32).reshape(-1, 4),
          "labels": np.array(gt_labels, np.int64),
          "relations": np.array(gt_rels, np.int64).reshape(-1, 3)}
    rel_scores = np.array(rel_scores, np.float32).reshape(-1, NUM_PREDICATES + 1)
    pred = {"image_id": image_id,
            "boxes": np.array(boxes, np.float32).reshape(-1, 4),
            "labels": np.array(labels, np.int64),
            "scores": np.array(scores, np.float32),
            "rel_pairs": np.array(pairs, np.int64).reshape(-1, 2),
            "rel_scores": rel_scores,
            "triplet_scores": rel_scores[:, :-1].max(1) if len(rel_scores) else np.zeros(0, np.float32)}
    return gt, pred


def image_a():
    return image(
        [[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30]], [1, 2, 3],
        [[0, 1, 0], [0, 2, 5], [1, 2, 5], [0, 1, 7]],
        [[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30], [0, 0, 10, 5]], [1, 2, 3, 1], [.9, .8, .5, .7],
        [[0, 1], [0, 2], [3, 1], [1, 2]],
        [dist({0: .6, 7: .3}), dist({3: .5, 5: .4}), dist({7: .8}), dist({5: .7})], image_id=1)


def image_b():
    return image(
        [[0, 0, 10, 10], [50, 50, 60, 60]], [4, 5], [[0, 1, 2]],
        [[0, 0, 10, 10], [50, 50, 60, 60], [100, 100, 110, 110]], [4, 5, 6], [1.0, 1.0, .5],
        [[2, 0]] * 24 + [[0, 1]], [dist({1: .9})] * 24 + [dist({2: .6})], image_id=2)


def image_c():
    boxes = [[0, 0, 20, 20], [10, 10, 30, 30], [40, 40, 50, 50], [60, 40, 70, 50]]
    return image(
        boxes, [0, 0, 1, 1], [[0, 1, 32], [0, 1, 32], [2, 3, 0], [1, 2, 5]],
        boxes, [0, 0, 1, 1], [.9] * 4,
        [[0, 1], [2, 3], [1, 2]], [dist({32: .7}), dist({3: .5, 0: .3}), dist({5: .6})], image_id=3)


def image_d():
    uniform = dist({c: .018 for c in range(NUM_PREDICATES)}, background=.1)
    return image(
        [[0, 0, 10, 10], [20, 20, 30, 30]], [10, 11], [[0, 1, 9]],
        [[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60], [70, 70, 80, 80], [90, 90, 100, 100]],
        [10, 11, 12, 13, 14], [.1, .1, 1, 1, 1],
        [[0, 1], [2, 3], [3, 4], [4, 2]], [dist({9: .9}), uniform, uniform, uniform], image_id=4)


def all_images():
    return [image_a(), image_b(), image_c(), image_d()]


EXPECTED = {
    "R": (0.625, 0.875, 0.875),
    "ngR": (0.75, 0.75, 0.75),
    "zR": (2 / 3, 2 / 3, 2 / 3),
    "mR": (0.087, 0.112, 0.112),
    "mR_corrected": (0.085, 0.105, 0.105),
    "hR": (0.15273876, 0.19858156, 0.19858156),
    "hR_corrected": (0.14964789, 0.1875, 0.1875),
}
EXPECTED_PER_CLASS_ISG = {
    20: {0: 0.6, 5: 0.75, 7: 1.0, 9: 1.0, 32: 1.0, 2: 0.0},
    50: {0: 0.85, 2: 1.0, 5: 0.75, 7: 1.0, 9: 1.0, 32: 1.0},
    100: {0: 0.85, 2: 1.0, 5: 0.75, 7: 1.0, 9: 1.0, 32: 1.0},
}
