"""Scene-graph recalls of IterativeSG in sgdet mode: R@K, ng-R@K, zR@K, mR@K and hR@K.

The semantics are those of the reference evaluator (ubc-vision/IterativeSG
``evaluation/sg_evaluation.py``):

* A predicted triplet matches a GT relation when subject class, predicate and object class are equal
  and both boxes have IoU >= 0.5 (inclusive). Matching is many-to-many; every GT row counts, duplicates
  included.
* R@K: the prediction rows are taken in the given order (never re-sorted); the predicate of a row is the
  argmax over the real predicate columns (the last column of ``rel_scores`` is "no relation").
  Per image, recall = |GT rows matched by the first K rows| / G.
* ng-R@K: every (row, predicate) is a candidate scored obj_score[sub] * obj_score[obj] * rel_score; the
  first 100 of ``np.argsort(-scores.ravel())`` are kept (ties broken exactly as that call does).
* Images with no GT relation or no predicted row are skipped (not counted as 0). Dataset value = mean over
  the counted images. zR@K averages only over counted images that have zero-shot GT rows.
* mR@K: per predicate, the mean over images containing it of the per-image recall of that predicate;
  classes never seen count as 0; sum / num_predicates. The ISG convention reproduces the reference bug:
  slot 0 (predicate 0, "above") holds (|matched| + hit_0) / (G + n_0) for every counted image.
  The corrected convention is the Scene-Graph-Benchmark one.
* hR@K = 2·R·mR / (R + mR) (0 when both are 0), with either mR.

Everything is vectorised per image (IoU matrix, label equality and gathers); the per-K statistics are
computed once over all images at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

RECALL_KS = (20, 50, 100)
IOU_THRESHOLD = 0.5
NG_CANDIDATES = 100
IOU_CONVENTIONS = ("isg", "sgb")
NO_MATCH = np.iinfo(np.int64).max  # rank given to a GT row that no candidate matches


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray, convention: str = "isg") -> np.ndarray:
    """Pairwise IoU [N, M] float32 of xyxy pixel boxes [N, 4] and [M, 4].

    ``"isg"``: detectron2 ``pairwise_iou`` (continuous areas, IoU 0 where the boxes do not intersect).
    ``"sgb"``: Scene-Graph-Benchmark ``boxlist_iou`` (+1 pixel on widths, heights and intersections).
    The float32 operations are the same, in the same order, as in the reference code.
    """
    x1a, y1a, x2a, y2a = np.asarray(boxes1, dtype=np.float32).reshape(-1, 4).T[:, :, None]  # [N, 1] each
    x1b, y1b, x2b, y2b = np.asarray(boxes2, dtype=np.float32).reshape(-1, 4).T[:, None, :]  # [1, M] each
    # Boxes beyond float32's range (only possible without image sizes to clip to) give inf / NaN IoUs,
    # which never reach the match threshold: no overflow warnings for them.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        width = np.minimum(x2a, x2b) - np.maximum(x1a, x1b)                                 # [N, M]
        height = np.minimum(y2a, y2b) - np.maximum(y1a, y1b)
        if convention == "isg":
            area_a, area_b = (x2a - x1a) * (y2a - y1a), (x2b - x1b) * (y2b - y1b)
        elif convention == "sgb":
            width, height = width + 1, height + 1
            area_a, area_b = (x2a - x1a + 1) * (y2a - y1a + 1), (x2b - x1b + 1) * (y2b - y1b + 1)
        else:
            raise ValueError(f"unknown IoU convention {convention!r}; expected one of {IOU_CONVENTIONS}")
        inter = np.maximum(width, 0) * np.maximum(height, 0)
        union = area_a + area_b - inter
        if convention == "isg":
            return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)
        return inter / union


def top_candidates(scores: np.ndarray, num: int = NG_CANDIDATES) -> np.ndarray:
    """Flat indices of the ``num`` best entries of ``scores`` [P, C], equal to ``np.argsort(-flat)[:num]``.

    Sorting all P·C entries is the slow part of ng-R, so only the entries that can reach the top ``num``
    are sorted: those >= the num-th largest row maximum (each of those rows has one entry above it).
    When the best num+1 values are all distinct the order is the same for every sorting algorithm; with
    ties at the top the full ``np.argsort`` runs, so ties are broken exactly as in the reference.
    """
    flat = scores.ravel()
    if flat.size <= num:
        candidates = np.arange(flat.size)
    else:
        pool = scores.max(1) if scores.shape[0] >= num else flat
        threshold = np.partition(pool, pool.size - num)[pool.size - num]
        candidates = np.flatnonzero(flat >= threshold)
    values = flat[candidates]
    order = np.argsort(-values, kind="stable")
    head = values[order[: num + 1]]
    if np.all(head[:-1] > head[1:]):
        return candidates[order[:num]]
    return np.argsort(-flat)[:num]


def entity_matches(gt_boxes: np.ndarray, gt_labels: np.ndarray, gt_relations: np.ndarray, boxes: np.ndarray,
                   labels: np.ndarray, iou_convention: str = "isg") -> tuple[np.ndarray, np.ndarray]:
    """Which predicted objects can stand for the subject / object of each GT relation.

    Args:
        gt_boxes [N, 4] float32 xyxy pixels, gt_labels [N] int64, gt_relations [G, 3] (sub, obj, pred).
        boxes [M, 4] float32 xyxy pixels, labels [M] int64: the predicted objects.
    Returns:
        sub_ok, obj_ok [G, M] bool: predicted object j has the class of GT row g's subject (object) and
        a box IoU >= IOU_THRESHOLD with it.
    """
    iou_ok = box_iou(gt_boxes, boxes, iou_convention) >= IOU_THRESHOLD                   # [N, M]
    gt_sub, gt_obj = gt_relations[:, 0], gt_relations[:, 1]
    sub_ok = iou_ok[gt_sub] & (gt_labels[gt_sub][:, None] == labels[None, :])          # [G, M]
    obj_ok = iou_ok[gt_obj] & (gt_labels[gt_obj][:, None] == labels[None, :])
    return sub_ok, obj_ok


def triplet_hits(sub_ok: np.ndarray, obj_ok: np.ndarray, gt_predicates: np.ndarray, subjects: np.ndarray,
                 objects: np.ndarray, predicates: np.ndarray) -> np.ndarray:
    """[G, L] bool: candidate triplet l matches GT row g (the R@K rule: classes, predicate, both IoUs).

    sub_ok / obj_ok [G, M] from :func:`entity_matches`; subjects, objects, predicates [L]: candidates.
    """
    return sub_ok[:, subjects] & obj_ok[:, objects] & (gt_predicates[:, None] == predicates[None, :])


def _first_match(sub_ok: np.ndarray, obj_ok: np.ndarray, gt_predicates: np.ndarray,
                 subjects: np.ndarray, objects: np.ndarray, predicates: np.ndarray) -> np.ndarray:
    """Rank [G] of the first candidate triplet that matches each GT row (NO_MATCH if none).

    sub_ok / obj_ok [G, M]: predicted box j has the class of GT row g's subject / object and IoU >= thr.
    subjects, objects, predicates [L]: the candidate triplets, in rank order.
    """
    hit = triplet_hits(sub_ok, obj_ok, gt_predicates, subjects, objects, predicates)
    first = hit.argmax(1)
    return np.where(hit[np.arange(len(first)), first], first, NO_MATCH)


@dataclass
class SceneGraphScores:
    """Dataset-level scores (fractions in [0, 1]; NaN where undefined, e.g. no zero-shot image).

    The ``per_predicate_*`` arrays are [num_predicates], indexed by 0-based predicate.
    """

    num_predicates: int
    num_images_counted: int
    num_images_zero_shot: int
    recall: dict[int, float]
    ng_recall: dict[int, float]
    zero_shot_recall: dict[int, float]
    mean_recall_isg: dict[int, float]
    mean_recall_corrected: dict[int, float]
    per_predicate_isg: dict[int, np.ndarray] = field(repr=False)
    per_predicate_corrected: dict[int, np.ndarray] = field(repr=False)

    def sgdet(self) -> dict[str, float]:
        """The ``"sgdet"`` block of the metrics JSON (keys ``R@20`` … ``SGMeanRecall@100``)."""
        out: dict[str, float] = {}
        for name, values in (("R", self.recall), ("ngR", self.ng_recall), ("zR", self.zero_shot_recall),
                             ("mR", self.mean_recall_isg), ("mR_corrected", self.mean_recall_corrected)):
            out.update({f"{name}@{k}": float(values[k]) for k in RECALL_KS})
        for k in RECALL_KS:
            out[f"hR@{k}"] = harmonic_recall(self.recall[k], self.mean_recall_isg[k])
            out[f"hR_corrected@{k}"] = harmonic_recall(self.recall[k], self.mean_recall_corrected[k])
            out[f"SGMeanRecall@{k}"] = float(self.mean_recall_isg[k])
        return out


def harmonic_recall(recall: float, mean_recall: float) -> float:
    """hR = 2·R·mR / (R + mR), 0 when both are 0 (NaN propagates)."""
    if recall == 0 and mean_recall == 0:
        return 0.0
    return float(2 * recall * mean_recall / (recall + mean_recall))


def _triplet_keys(subject_classes: np.ndarray, object_classes: np.ndarray,
                  predicates: np.ndarray) -> np.ndarray:
    """One int64 key per (subject class, object class, predicate) row (each value < 2**20)."""
    return (subject_classes.astype(np.int64) << 40) | (object_classes.astype(np.int64) << 20) | predicates


class SceneGraphRecall:
    """Accumulates per-image matches with :meth:`add`, then :meth:`summarize` gives the dataset scores.

    Args:
        num_predicates: C, the number of real predicate classes (``rel_scores`` has C + 1 columns).
        zero_shot_triplets: [Z, 3] int, 0-based (subject class, object class, predicate) rows.
        iou_convention: ``"isg"`` (default, the reference) or ``"sgb"`` (+1 pixel).
    """

    def __init__(self, num_predicates: int, zero_shot_triplets: np.ndarray | None = None,
                 iou_convention: str = "isg"):
        if iou_convention not in IOU_CONVENTIONS:
            raise ValueError(f"unknown IoU convention {iou_convention!r}; expected one of {IOU_CONVENTIONS}")
        self.num_predicates = int(num_predicates)
        self.iou_convention = iou_convention
        zs = np.zeros((0, 3), np.int64) if zero_shot_triplets is None else np.asarray(zero_shot_triplets)
        self._zero_shot_keys = np.unique(_triplet_keys(zs[:, 0], zs[:, 1], zs[:, 2].astype(np.int64)))
        self._rows: list[tuple[np.ndarray, ...]] = []  # per counted image: first_gc, first_ng, pred, sub, obj

    def add(self, gt_boxes: np.ndarray, gt_labels: np.ndarray, gt_relations: np.ndarray,
            boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray,
            rel_pairs: np.ndarray, rel_scores: np.ndarray) -> bool:
        """Match one image; returns False when the image is skipped (no GT relation or no predicted row).

        Args:
            gt_boxes [N, 4] float32 xyxy, gt_labels [N] int64, gt_relations [G, 3] int64 (sub, obj, pred).
            boxes [M, 4] float32 xyxy, labels [M] int64, scores [M] float32: the predicted objects.
            rel_pairs [P, 2] int64 ranked best-first; rel_scores [P, C + 1] float32, last column = none.
        """
        if len(gt_relations) == 0 or len(rel_pairs) == 0:
            return False
        gt_sub, gt_obj, gt_pred = gt_relations[:, 0], gt_relations[:, 1], gt_relations[:, 2]
        if gt_pred.min() < 0 or gt_pred.max() >= self.num_predicates:
            raise ValueError(f"GT predicate outside [0, {self.num_predicates}): {gt_pred.tolist()}")
        sub_ok, obj_ok = entity_matches(gt_boxes, gt_labels, gt_relations, boxes, labels,
                                        self.iou_convention)                             # [G, M] each
        subjects, objects = rel_pairs[:, 0], rel_pairs[:, 1]
        predicate_scores = rel_scores[:, : self.num_predicates]                       # [P, C]
        first_gc = _first_match(sub_ok, obj_ok, gt_pred, subjects, objects, predicate_scores.argmax(1))

        ng_scores = (scores[subjects] * scores[objects])[:, None] * predicate_scores   # [P, C] float32
        rows, predicates = np.divmod(top_candidates(ng_scores), self.num_predicates)
        first_ng = _first_match(sub_ok, obj_ok, gt_pred, subjects[rows], objects[rows], predicates)
        self._rows.append((first_gc, first_ng, gt_pred, gt_labels[gt_sub], gt_labels[gt_obj]))
        return True

    def summarize(self) -> SceneGraphScores:
        """Dataset-level R, ng-R, zR and both mR conventions for K in RECALL_KS."""
        num_images, num_classes = len(self._rows), self.num_predicates
        first_gc, first_ng, gt_pred, sub_cls, obj_cls = (
            np.concatenate([r[i] for r in self._rows]) if self._rows else np.zeros(0, np.int64)
            for i in range(5)
        )
        gt_count = np.array([len(r[0]) for r in self._rows], dtype=np.int64)
        image = np.repeat(np.arange(num_images), gt_count)                       # image of each GT row
        zero_shot = np.isin(_triplet_keys(sub_cls, obj_cls, gt_pred), self._zero_shot_keys)
        zs_count = np.bincount(image, weights=zero_shot, minlength=num_images)
        class_key = image * num_classes + gt_pred
        class_count = np.bincount(class_key, minlength=num_images * num_classes)
        class_count = class_count.reshape(num_images, num_classes)

        scores = SceneGraphScores(num_classes, num_images, int((zs_count > 0).sum()),
                                  {}, {}, {}, {}, {}, {}, {})
        for k in RECALL_KS:
            matched = first_gc < k
            hits = np.bincount(image, weights=matched, minlength=num_images)
            scores.recall[k] = _mean(hits / gt_count)
            ng_hits = np.bincount(image, weights=first_ng < k, minlength=num_images)
            scores.ng_recall[k] = _mean(ng_hits / gt_count)
            zs_hits = np.bincount(image, weights=matched & zero_shot, minlength=num_images)
            with_zs = zs_count > 0
            scores.zero_shot_recall[k] = _mean(zs_hits[with_zs] / zs_count[with_zs])

            class_hits = np.bincount(class_key[matched], minlength=num_images * num_classes)
            class_hits = class_hits.reshape(num_images, num_classes)
            corrected = _per_class_recall(class_hits, class_count)
            isg = corrected.copy()
            if num_images:  # the reference's slot-0 accumulator: overall + predicate-0 hits, every image
                isg[0] = np.mean((hits + class_hits[:, 0]) / (gt_count + class_count[:, 0]))
            scores.per_predicate_corrected[k] = corrected
            scores.per_predicate_isg[k] = isg
            scores.mean_recall_corrected[k] = _sequential_sum(corrected) / max(num_classes, 1)
            scores.mean_recall_isg[k] = _sequential_sum(isg) / max(num_classes, 1)
        return scores


def _mean(values: np.ndarray) -> float:
    """np.mean (the reference's averaging), NaN without a warning for an empty array."""
    return float(np.mean(values)) if values.size else float("nan")


def _per_class_recall(class_hits: np.ndarray, class_count: np.ndarray) -> np.ndarray:
    """[C] mean over images containing class c of hits/count (0 for a class in no image)."""
    recall = np.zeros(class_count.shape[1])
    for c in range(class_count.shape[1]):  # a loop over classes (50), each a vectorised mean
        present = class_count[:, c] > 0
        if present.any():
            recall[c] = np.mean(class_hits[present, c] / class_count[present, c])
    return recall


def _sequential_sum(values: np.ndarray) -> float:
    """Left-to-right float64 sum, as the reference's ``sum_recall += ...`` loop."""
    return float(np.add.accumulate(values)[-1]) if len(values) else 0.0


def scene_graph_scores(images: Iterable[tuple[Mapping, Mapping]], num_predicates: int,
                       zero_shot_triplets: np.ndarray | None = None,
                       iou_convention: str = "isg") -> SceneGraphScores:
    """Scores of (ground truth, prediction) dict pairs in one call (the bench and the tests use it).

    GT dicts hold ``boxes``, ``labels``, ``relations``; prediction dicts the contract's fields
    (``boxes``, ``labels``, ``scores``, ``rel_pairs``, ``rel_scores``), as NumPy arrays of the
    documented dtypes. ``zero_shot_triplets`` are 0-based.
    """
    recall = SceneGraphRecall(num_predicates, zero_shot_triplets, iou_convention)
    for gt, pred in images:
        recall.add(gt["boxes"], gt["labels"], gt["relations"], pred["boxes"], pred["labels"],
                   pred["scores"], pred["rel_pairs"], pred["rel_scores"])
    return recall.summarize()
