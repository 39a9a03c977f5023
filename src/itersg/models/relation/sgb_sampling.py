"""Relation pair sampling of Scene-Graph-Benchmark (SGB, ``relation_head/sampling.py``: ``RelationSampling``).

Training picks, per image, at most ``batch_size_per_image`` ordered pairs (1024 in
``e2e_relation_X_101_32_8_FPN_1x.yaml``; defaults.py says 64), of which at most
int(1024 * 0.25) = 256 foreground (a ground-truth predicate 1..50), the rest background (label 0):

* ``gtbox_relsample`` (PredCls, SGCls; the boxes are the ground truth): foreground = the annotated
  pairs, background = every other ordered pair without self-pairs.
* ``detect_relsample`` (SGDet; Neural Motifs' ``rel_assignments``): a detection matches a ground-truth
  box when IoU > 0.5 (strictly) and its label equals the ground truth's label; every (matched subject,
  matched object) detection pair of an annotated relation is a foreground candidate, at most
  ``num_sample_per_gt_rel`` (4) per relation, drawn without replacement with probability proportional
  to IoU(subject) * IoU(object); background = ordered pairs of detections whose label is not 0 that
  are no foreground candidate (and overlap, with ``require_overlap``).
* ``prepare_test_pairs``: every ordered pair without self-pairs (SGB caps nothing: with 80 detections,
  80 * 79 = 6320 pairs); [[0, 0]] when an image has fewer than two boxes.

Randomness: SGB draws from the global torch RNG of the tensors' device (``torch.randperm``) and numpy's
global RNG (``npr.choice`` of the IoU-weighted draw). Here every draw comes from the ``generator``
argument, a CPU ``torch.Generator`` whatever the device of the boxes, so a seed gives the same pairs on
CPU and GPU; the algorithms and their distributions are SGB's (``torch.multinomial`` without
replacement draws successively proportional to the remaining weights, as ``npr.choice(replace=False,
p=...)``), the streams are not.

Boxes are x1, y1, x2, y2 in maskrcnn-benchmark's inclusive convention (IoU with +1 widths), any pixel
frame shared by detections and ground truth. Labels are SGB's: objects 1..150 (0 background),
predicates 1..50 (0 background); ``relation`` matrices are [N, N] with the predicate of (subject,
object) or 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from torchvision.ops import box_iou

from itersg.models.detectors.faster_rcnn import to_exclusive
from itersg.models.relation.sgb_union_features import all_ordered_pairs


@dataclass(frozen=True)
class SGBRelationSamplingConfig:
    """SGB's sampling settings (config keys in brackets; yaml = e2e_relation_X_101_32_8_FPN_1x.yaml).

    ``batch_size_per_image`` [ROI_RELATION_HEAD.BATCH_SIZE_PER_IMAGE: yaml 1024, defaults.py 64],
    ``positive_fraction`` [POSITIVE_FRACTION 0.25], ``fg_iou_threshold`` [ROI_HEADS.FG_IOU_THRESHOLD 0.5,
    compared with > in ``detect_relsample``], ``num_sample_per_gt_rel`` [NUM_SAMPLE_PER_GT_REL 4],
    ``require_overlap`` [REQUIRE_BOX_OVERLAP: yaml False, defaults.py True; SGDet training only].
    """

    batch_size_per_image: int = 1024
    positive_fraction: float = 0.25
    fg_iou_threshold: float = 0.5
    num_sample_per_gt_rel: int = 4
    require_overlap: bool = False

    @property
    def num_positive(self) -> int:
        """At most this many foreground pairs per image: int(batch * fraction), 256."""
        return int(self.batch_size_per_image * self.positive_fraction)


class RelationSample(NamedTuple):
    """One image's sampled pairs: ``pairs`` [R, 2] (subject, object) int64, ``labels`` [R] int64
    (predicate 1..50, 0 background; foreground first) and ``binary`` [N, N] int64, SGB's symmetric
    "related" matrix (1 where a ground-truth relation links the two boxes in either direction)."""

    pairs: Tensor
    labels: Tensor
    binary: Tensor


def inclusive_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU [N, M] of inclusive boxes [N, 4], [M, 4] with +1 widths (maskrcnn-benchmark's boxlist_iou)."""
    return box_iou(to_exclusive(boxes1), to_exclusive(boxes2))


def _randperm(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.randperm(n, generator=generator).to(device)


def _split(relation: Tensor) -> tuple[Tensor, Tensor]:
    """Relation matrix [N, N] -> annotated pairs [K, 2] (row-major) and their predicates [K]."""
    pairs = (relation > 0).nonzero()
    return pairs, relation[pairs[:, 0], pairs[:, 1]].long()


def _binary(num_boxes: int, heads: Tensor, tails: Tensor, device: torch.device) -> Tensor:
    binary = torch.zeros((num_boxes, num_boxes), dtype=torch.int64, device=device)
    binary[heads, tails] = 1
    binary[tails, heads] = 1
    return binary


def gtbox_relsample(relation: Tensor, generator: torch.Generator,
                    config: SGBRelationSamplingConfig | None = None) -> RelationSample:
    """PredCls/SGCls training pairs of one image (SGB's ``gtbox_relsample``).

    Args:
        relation: [N, N] ground-truth predicates (0 none) of the image's N ground-truth boxes.
        generator: CPU generator of every random draw.
        config: sampling settings (SGB's yaml by default).

    Returns:
        ``RelationSample``: the annotated pairs (a random ``num_positive`` of them if more, else all in
        row-major order), then up to ``batch_size_per_image`` - #fg random non-annotated pairs (no
        self-pairs), label 0; ``binary`` marks every annotated pair, sampled or not.
    """
    config = config or SGBRelationSamplingConfig()
    num_boxes, device = relation.shape[0], relation.device
    fg_pairs, fg_labels = _split(relation)
    binary = _binary(num_boxes, fg_pairs[:, 0], fg_pairs[:, 1], device)
    possible = ~torch.eye(num_boxes, dtype=torch.bool, device=device)
    possible[fg_pairs[:, 0], fg_pairs[:, 1]] = False
    bg_pairs = possible.nonzero()
    if len(fg_pairs) > config.num_positive:
        keep = _randperm(len(fg_pairs), generator, device)[: config.num_positive]
        fg_pairs, fg_labels = fg_pairs[keep], fg_labels[keep]
    bg_pairs = bg_pairs[_randperm(len(bg_pairs), generator, device)[: config.batch_size_per_image - len(fg_pairs)]]
    labels = torch.cat((fg_labels, fg_labels.new_zeros(len(bg_pairs))))
    return RelationSample(torch.cat((fg_pairs, bg_pairs)), labels, binary)


def assign_proposal_labels(proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                           fg_iou_threshold: float = 0.5) -> Tensor:
    """SGDet training labels of proposals [P, 4] (SGB's box-head ``assign_label_to_proposals``): the label
    of the ground-truth box [G, 4] of highest IoU when that IoU is >= ``fg_iou_threshold``, else 0.

    SGB assigns them to the proposals before box regression and NMS and carries them to the detections
    that ``detect_relsample`` and the object loss then see. Returns [P] int64.
    """
    best, index = inclusive_box_iou(gt_boxes, proposals).max(dim=0)
    labels = gt_labels.long()[index]
    return torch.where(best >= fg_iou_threshold, labels, torch.zeros_like(labels))


def _candidate_pairs(boxes: Tensor, labels: Tensor, require_overlap: bool) -> Tensor:
    """[P, P] bool: ordered pairs of detections with a non-zero label (and IoU in (0, 1) if required)."""
    if require_overlap:
        iou = inclusive_box_iou(boxes, boxes)
        possible = (iou > 0) & (iou < 1)  # SGB's "not self & intersect": identical boxes are dropped too
    else:
        possible = ~torch.eye(len(boxes), dtype=torch.bool, device=boxes.device)
    background = labels == 0
    possible[background] = False
    possible[:, background] = False
    return possible


def _foreground(relation: Tensor, ious: Tensor, is_match: Tensor, possible: Tensor, generator: torch.Generator,
                config: SGBRelationSamplingConfig) -> tuple[Tensor, Tensor]:
    """Foreground triplets [F, 3] (subject, object, predicate) and SGB's binary matrix [P, P]; clears the
    foreground candidates in ``possible`` (in place) so that they never become background."""
    device, num_prp = is_match.device, is_match.shape[1]
    gt_pairs, gt_labels = _split(relation)
    binary = torch.zeros((num_prp, num_prp), dtype=torch.int64, device=device)
    triplets = []
    for (gt_head, gt_tail), predicate in zip(gt_pairs.tolist(), gt_labels.tolist()):
        head, tail = is_match[gt_head].nonzero()[:, 0], is_match[gt_tail].nonzero()[:, 0]
        grid_h, grid_t = head[:, None].expand(-1, len(tail)), tail[None, :].expand(len(head), -1)
        binary[grid_h, grid_t] = 1  # self-pairs included, as SGB
        binary[grid_t, grid_h] = 1
        heads, tails = grid_h.reshape(-1), grid_t.reshape(-1)  # subject-major, as SGB
        valid = heads != tails
        heads, tails = heads[valid], tails[valid]
        if len(heads) == 0:
            continue
        possible[heads, tails] = False
        if len(heads) > config.num_sample_per_gt_rel:
            weights = (ious[gt_head, heads] * ious[gt_tail, tails]).double().cpu()
            keep = torch.multinomial(weights, config.num_sample_per_gt_rel, generator=generator).to(device)
            heads, tails = heads[keep], tails[keep]
        triplets.append(torch.stack((heads, tails, torch.full_like(heads, predicate)), dim=1))
    return (torch.cat(triplets) if triplets else torch.zeros((0, 3), dtype=torch.int64, device=device)), binary


def detect_relsample(boxes: Tensor, labels: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_relation: Tensor,
                     generator: torch.Generator, config: SGBRelationSamplingConfig | None = None) -> RelationSample:
    """SGDet training pairs of one image (SGB's ``detect_relsample`` / ``motif_rel_fg_bg_sampling``).

    Args:
        boxes: detections [P, 4] (inclusive boxes, same frame as ``gt_boxes``).
        labels: their labels [P] (SGB: ``assign_proposal_labels`` of the proposals they come from; 0 =
            background, such detections are in no pair).
        gt_boxes, gt_labels: ground truth [G, 4], [G] (1..150).
        gt_relation: [G, G] ground-truth predicates (0 none).
        generator: CPU generator of every random draw.
        config: sampling settings (SGB's yaml by default).

    Returns:
        ``RelationSample``: foreground triplets in ground-truth relation order (a random ``num_positive``
        of them if more), then min(batch - #fg, available) random background pairs; one placeholder pair
        (0, 0) with label 0 when there is neither.
    """
    config = config or SGBRelationSamplingConfig()
    device = boxes.device
    ious = inclusive_box_iou(gt_boxes, boxes)  # [G, P]
    is_match = (gt_labels.long()[:, None] == labels.long()[None]) & (ious > config.fg_iou_threshold)
    possible = _candidate_pairs(boxes, labels, config.require_overlap)
    fg, binary = _foreground(gt_relation, ious, is_match, possible, generator, config)
    if len(fg) > config.num_positive:
        fg = fg[_randperm(len(fg), generator, device)[: config.num_positive]]
    bg_pairs = possible.nonzero()
    if len(bg_pairs) > 0:
        bg_pairs = bg_pairs[_randperm(len(bg_pairs), generator, device)[: config.batch_size_per_image - len(fg)]]
    triplets = torch.cat((fg, torch.cat((bg_pairs, bg_pairs.new_zeros((len(bg_pairs), 1))), dim=1)))
    if len(triplets) == 0:
        triplets = torch.zeros((1, 3), dtype=torch.int64, device=device)
    return RelationSample(triplets[:, :2], triplets[:, 2], binary)


def prepare_test_pairs(boxes: Tensor, require_overlap: bool = False) -> Tensor:
    """Test pairs of one image (SGB's ``prepare_test_pairs``): boxes [N, 4] (inclusive) -> [R, 2] int64.

    Every ordered pair without self-pairs, subject-major; ``require_overlap`` (SGB: TEST.RELATION.
    REQUIRE_OVERLAP, defaults.py True, the yaml False; SGDet only) keeps pairs with IoU > 0. SGB's
    placeholder [[0, 0]] (a self-pair) when no pair is left.
    """
    pairs = all_ordered_pairs(len(boxes), boxes.device)
    if require_overlap and len(pairs) > 0:
        pairs = pairs[inclusive_box_iou(boxes, boxes)[pairs[:, 0], pairs[:, 1]] > 0]
    if len(pairs) == 0:
        pairs = torch.zeros((1, 2), dtype=torch.int64, device=boxes.device)
    return pairs
