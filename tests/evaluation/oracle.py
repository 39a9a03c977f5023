"""Loop oracle for the scene-graph metrics: a plain port of the reference evaluators.

It follows ubc-vision/IterativeSG ``evaluation/sg_evaluation.py`` (SGRecall, SGNoGraphConstraintRecall,
SGZeroShotRecall, SGMeanRecall with its slot-0 bug) and ``evaluation/utils.py`` step by step: per-GT-row
loops, ``reduce(np.union1d, ...)``, Python lists of per-image values. The corrected mean recall follows
Scene-Graph-Benchmark's ``SGMeanRecall`` (1-based predicates, slot 0 an excluded accumulator). The IoU is
detectron2's ``pairwise_iou`` (or SGB's ``boxlist_iou``) written in torch float32. Written for the tests;
deliberately slow and literal, sharing no code with itersg.evaluation.
"""

from __future__ import annotations

import warnings
from functools import reduce

import numpy as np
import torch

KS = (20, 50, 100)


def intersect_2d(x1, x2):
    """[m1, m2] bool: row i of x1 equals row j of x2."""
    if x1.shape[1] != x2.shape[1]:
        raise ValueError("Input arrays must have same #columns")
    return (x1[..., None] == x2.T[None, ...]).all(1)


def argsort_desc(scores):
    """[numel, ndim] indices of scores in descending order (np.argsort default kind)."""
    return np.column_stack(np.unravel_index(np.argsort(-scores.ravel()), scores.shape))


def pairwise_iou_d2(boxes1, boxes2):
    """detectron2 structures/boxes.py pairwise_iou, float32."""
    b1 = torch.as_tensor(np.asarray(boxes1), dtype=torch.float32).reshape(-1, 4)
    b2 = torch.as_tensor(np.asarray(boxes2), dtype=torch.float32).reshape(-1, 4)
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    width_height = torch.min(b1[:, None, 2:], b2[:, 2:]) - torch.max(b1[:, None, :2], b2[:, :2])
    width_height.clamp_(min=0)
    inter = width_height.prod(dim=2)
    return torch.where(inter > 0, inter / (area1[:, None] + area2 - inter),
                       torch.zeros(1, dtype=inter.dtype))


def boxlist_iou_sgb(boxes1, boxes2):
    """Scene-Graph-Benchmark boxlist_iou with TO_REMOVE = 1, float32."""
    b1 = torch.as_tensor(np.asarray(boxes1), dtype=torch.float32).reshape(-1, 4)
    b2 = torch.as_tensor(np.asarray(boxes2), dtype=torch.float32).reshape(-1, 4)
    to_remove = 1
    area1 = (b1[:, 2] - b1[:, 0] + to_remove) * (b1[:, 3] - b1[:, 1] + to_remove)
    area2 = (b2[:, 2] - b2[:, 0] + to_remove) * (b2[:, 3] - b2[:, 1] + to_remove)
    lt = torch.max(b1[:, None, :2], b2[:, :2])
    rb = torch.min(b1[:, None, 2:], b2[:, 2:])
    wh = (rb - lt + to_remove).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return inter / (area1[:, None] + area2 - inter)


def _triplet(relations, classes, boxes):
    sub_id, ob_id, pred_label = relations[:, 0], relations[:, 1], relations[:, 2]
    triplets = np.column_stack((classes[sub_id], pred_label, classes[ob_id]))
    triplet_boxes = np.column_stack((boxes[sub_id], boxes[ob_id]))
    return triplets, triplet_boxes


def _compute_pred_matches(gt_triplets, pred_triplets, gt_boxes, pred_boxes, iou_thres, iou_fn):
    keeps = intersect_2d(gt_triplets, pred_triplets)
    gt_has_match = keeps.any(1)
    pred_to_gt = [[] for _ in range(pred_boxes.shape[0])]
    for gt_ind, gt_box, keep_inds in zip(np.where(gt_has_match)[0], gt_boxes[gt_has_match],
                                         keeps[gt_has_match]):
        boxes = pred_boxes[keep_inds]
        sub_iou = iou_fn(gt_box[None, :4], boxes[:, :4])[0]
        obj_iou = iou_fn(gt_box[None, 4:], boxes[:, 4:])[0]
        inds = ((sub_iou >= iou_thres) & (obj_iou >= iou_thres)).numpy()
        for i in np.where(keep_inds)[0][inds]:
            pred_to_gt[i].append(int(gt_ind))
    return pred_to_gt


class ReferenceEvaluator:
    """The reference's per-image evaluation with its result containers (sgdet mode)."""

    def __init__(self, num_rel, zero_shot_triplets, iou_convention="isg", iou_thres=0.5):
        self.num_rel = num_rel
        self.zeroshot_triplet = np.asarray(zero_shot_triplets, dtype=np.int64).reshape(-1, 3)
        self.iou_fn = pairwise_iou_d2 if iou_convention == "isg" else boxlist_iou_sgb
        self.iou_thres = iou_thres
        self.recall = {k: [] for k in KS}
        self.recall_nogc = {k: [] for k in KS}
        self.zeroshot_recall = {k: [] for k in KS}
        self.mean_recall_collect = {k: [[] for _ in range(num_rel)] for k in KS}
        self.sgb_mean_recall_collect = {k: [[] for _ in range(num_rel + 1)] for k in KS}

    def evaluate_image(self, gt, pred):
        gt_rels = np.asarray(gt["relations"]).astype(np.int64).reshape(-1, 3)
        if len(gt_rels) == 0:
            return
        gt_boxes = np.asarray(gt["boxes"], dtype=np.float32)
        gt_classes = np.asarray(gt["labels"]).astype(np.int64)
        pred_rel_inds = np.asarray(pred["rel_pairs"]).astype(np.int64).reshape(-1, 2)
        rel_scores = np.asarray(pred["rel_scores"], dtype=np.float32)
        pred_boxes = np.asarray(pred["boxes"], dtype=np.float32)
        pred_classes = np.asarray(pred["labels"]).astype(np.int64)
        obj_scores = np.asarray(pred["scores"], dtype=np.float32)

        # prepare_zeroshot
        sub_id, ob_id, pred_label = gt_rels[:, 0], gt_rels[:, 1], gt_rels[:, 2]
        gt_zs_triplets = np.column_stack((gt_classes[sub_id], gt_classes[ob_id], pred_label))
        zeroshot_idx = np.where(intersect_2d(gt_zs_triplets, self.zeroshot_triplet).sum(-1) > 0)[0].tolist()

        if pred_rel_inds.shape[0] == 0:
            return

        # SGRecall.calculate_recall
        pred_rels = np.column_stack((pred_rel_inds, rel_scores[:, :-1].argmax(1)))
        gt_triplets, gt_triplet_boxes = _triplet(gt_rels, gt_classes, gt_boxes)
        pred_triplets, pred_triplet_boxes = _triplet(pred_rels, pred_classes, pred_boxes)
        pred_to_gt = _compute_pred_matches(gt_triplets, pred_triplets, gt_triplet_boxes,
                                           pred_triplet_boxes, self.iou_thres, self.iou_fn)
        for k in KS:
            match = reduce(np.union1d, pred_to_gt[:k])
            self.recall[k].append(float(len(match)) / float(gt_rels.shape[0]))

        # SGNoGraphConstraintRecall.calculate_recall
        obj_scores_per_rel = obj_scores[pred_rel_inds].prod(1)
        nogc_overall_scores = obj_scores_per_rel[:, None] * rel_scores[:, :-1]
        nogc_score_inds = argsort_desc(nogc_overall_scores)[:100]
        nogc_pred_rels = np.column_stack((pred_rel_inds[nogc_score_inds[:, 0]], nogc_score_inds[:, 1]))
        nogc_pred_triplets, nogc_pred_triplet_boxes = _triplet(nogc_pred_rels, pred_classes, pred_boxes)
        nogc_pred_to_gt = _compute_pred_matches(gt_triplets, nogc_pred_triplets, gt_triplet_boxes,
                                                nogc_pred_triplet_boxes, self.iou_thres, self.iou_fn)
        for k in KS:
            match = reduce(np.union1d, nogc_pred_to_gt[:k])
            self.recall_nogc[k].append(float(len(match)) / float(gt_rels.shape[0]))

        # SGMeanRecall.collect_mean_recall_items (ISG, with recall_count[0]/recall_hit[0] += 1)
        for k in KS:
            match = reduce(np.union1d, pred_to_gt[:k])
            recall_hit = [0] * self.num_rel
            recall_count = [0] * self.num_rel
            for idx in range(gt_rels.shape[0]):
                local_label = gt_rels[idx, 2]
                recall_count[int(local_label)] += 1
                recall_count[0] += 1
            for idx in range(len(match)):
                local_label = gt_rels[int(match[idx]), 2]
                recall_hit[int(local_label)] += 1
                recall_hit[0] += 1
            for n in range(self.num_rel):
                if recall_count[n] > 0:
                    self.mean_recall_collect[k][n].append(float(recall_hit[n] / recall_count[n]))

        # Scene-Graph-Benchmark SGMeanRecall: 1-based predicates, slot 0 = background accumulator
        for k in KS:
            match = reduce(np.union1d, pred_to_gt[:k])
            recall_hit = [0] * (self.num_rel + 1)
            recall_count = [0] * (self.num_rel + 1)
            for idx in range(gt_rels.shape[0]):
                local_label = gt_rels[idx, 2] + 1
                recall_count[int(local_label)] += 1
                recall_count[0] += 1
            for idx in range(len(match)):
                local_label = gt_rels[int(match[idx]), 2] + 1
                recall_hit[int(local_label)] += 1
                recall_hit[0] += 1
            for n in range(self.num_rel + 1):
                if recall_count[n] > 0:
                    self.sgb_mean_recall_collect[k][n].append(float(recall_hit[n] / recall_count[n]))

        # SGZeroShotRecall.calculate_recall
        for k in KS:
            match = reduce(np.union1d, pred_to_gt[:k])
            if len(zeroshot_idx) > 0:
                match_list = match.tolist() if not isinstance(match, list | tuple) else match
                zeroshot_match = len(zeroshot_idx) + len(match_list) - len(set(zeroshot_idx + match_list))
                self.zeroshot_recall[k].append(float(zeroshot_match) / float(len(zeroshot_idx)))

    def isg_mean_recall(self, k):
        per_class, sum_recall = [], 0
        for idx in range(self.num_rel):
            collect = self.mean_recall_collect[k][idx]
            tmp_recall = 0.0 if len(collect) == 0 else np.mean(collect)
            per_class.append(tmp_recall)
            sum_recall += tmp_recall
        return sum_recall / float(self.num_rel), per_class

    def sgb_mean_recall(self, k):
        per_class, sum_recall = [], 0
        num_rel_no_bg = self.num_rel
        for idx in range(num_rel_no_bg):
            collect = self.sgb_mean_recall_collect[k][idx + 1]
            tmp_recall = 0.0 if len(collect) == 0 else np.mean(collect)
            per_class.append(tmp_recall)
            sum_recall += tmp_recall
        return sum_recall / float(num_rel_no_bg), per_class

    def summary(self):
        """Keys as itersg's metrics JSON ``sgdet`` block, plus the per-predicate lists."""
        out = {"per_predicate_isg": {}, "per_predicate_corrected": {}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # np.mean([]) -> nan, as the reference
            for k in KS:
                out[f"R@{k}"] = float(np.mean(self.recall[k]))
                out[f"ngR@{k}"] = float(np.mean(self.recall_nogc[k]))
                out[f"zR@{k}"] = float(np.mean(self.zeroshot_recall[k]))
                out[f"mR@{k}"], out["per_predicate_isg"][k] = self.isg_mean_recall(k)
                out[f"mR_corrected@{k}"], out["per_predicate_corrected"][k] = self.sgb_mean_recall(k)
                out[f"SGMeanRecall@{k}"] = out[f"mR@{k}"]
                for name, mr in (("hR", out[f"mR@{k}"]), ("hR_corrected", out[f"mR_corrected@{k}"])):
                    r = out[f"R@{k}"]
                    out[f"{name}@{k}"] = 0.0 if r == 0 and mr == 0 else 2 * r * mr / (r + mr)
        return out


def oracle_scores(images, num_predicates, zero_shot_triplets=None, iou_convention="isg"):
    """The reference metrics of (gt, prediction) dict pairs; zero-shot triplets are 0-based."""
    zs = np.zeros((0, 3), np.int64) if zero_shot_triplets is None else zero_shot_triplets
    evaluator = ReferenceEvaluator(num_predicates, zs, iou_convention)
    for gt, pred in images:
        evaluator.evaluate_image(gt, pred)
    return evaluator.summary()
