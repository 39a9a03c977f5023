"""SGB's relation-stage shared parts: union boxes, rect masks, the union extractor's sizes and behaviour, the
box-feature copy, pair sampling (PredCls/SGCls and SGDet), test pairs and the two losses, on hand-worked cases."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torchvision.ops import roi_align

from itersg.models.detectors.faster_rcnn import SGB_RELATION_STAGE, SGBFasterRCNN, to_exclusive
from itersg.models.losses.sgb_relation import sgb_object_loss, sgb_relation_loss, sgb_relation_losses
from itersg.models.relation.sgb_sampling import (
    SGBRelationSamplingConfig,
    assign_proposal_labels,
    detect_relsample,
    gtbox_relsample,
    prepare_test_pairs,
)
from itersg.models.relation.sgb_union_features import (
    SGBBoxFeatureExtractor,
    SGBUnionFeatureExtractor,
    all_ordered_pairs,
    rect_masks,
    union_boxes,
)

SMALL_DETECTOR = dataclasses.replace(SGB_RELATION_STAGE, blocks=(1, 1, 1, 1), groups=1, width_per_group=8,
                                     fpn_channels=8, mlp_dim=16, min_size=64, max_size=100)


def _features(channels: int = 8, size: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random P2..P6 maps of one size x size image (strides 4, 8, 16, 32, 64)."""
    g = torch.Generator().manual_seed(seed)
    names = ("0", "1", "2", "3", "pool")
    return {n: torch.randn(1, channels, size // s, size // s, generator=g) for n, s in zip(names, (4, 8, 16, 32, 64))}


# --- geometry ---------------------------------------------------------------------------------------------

def test_union_boxes_by_hand():
    boxes = torch.tensor([[10.0, 20, 50, 60], [30, 5, 80, 40], [0, 0, 5, 5]])
    pairs = torch.tensor([[0, 1], [2, 0], [1, 2]])
    expected = torch.tensor([[10.0, 5, 80, 60], [0, 0, 50, 60], [0, 0, 80, 40]])
    assert torch.equal(union_boxes(boxes, pairs), expected)


def test_rect_masks_by_hand_in_the_frame_of_the_whole_image():
    # Image 270 wide, 135 high: x scales by 27/270 = 0.1, y by 27/135 = 0.2.
    # Subject [10, 20, 99, 64] -> x [1.0, 9.9] -> columns 1..10; y [4.0, 12.8] -> rows 4..13.
    # Object [135, 0, 269, 134] -> x [13.5, 26.9] -> columns 13..26 (27 is off the grid); y [0, 26.8] -> all rows.
    boxes = torch.tensor([[10.0, 20, 99, 64], [135, 0, 269, 134]])
    masks = rect_masks(boxes, torch.tensor([[0, 1]]), (135, 270))
    assert masks.shape == (1, 2, 27, 27) and masks.dtype == torch.float32
    subject, obj = torch.zeros(27, 27), torch.zeros(27, 27)
    subject[4:14, 1:11] = 1
    obj[:, 13:] = 1
    assert torch.equal(masks[0, 0], subject)
    assert torch.equal(masks[0, 1], obj)


def test_all_ordered_pairs_exclude_self_pairs_subject_major():
    pairs = all_ordered_pairs(3)
    assert pairs.tolist() == [[0, 1], [0, 2], [1, 0], [1, 2], [2, 0], [2, 1]]
    assert all_ordered_pairs(1).shape == (0, 2)


# --- the union extractor ------------------------------------------------------------------------------------

def test_union_extractor_parameter_counts_at_sgb_sizes():
    with torch.device("meta"):
        extractor = SGBUnionFeatureExtractor()  # C 256, 4 levels, 7x7, MLP 4096

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    reduce_conv = 4 * 256 * 256 * 3 * 3 + 256  # 3x3 conv 1024 -> 256
    fc6 = 256 * 7 * 7 * 4096 + 4096
    fc7 = 4096 * 4096 + 4096
    rect = (2 * 128 * 7 * 7 + 128) + 2 * 128 + (128 * 256 * 3 * 3 + 256) + 2 * 256  # conv, BN, conv, BN
    head = extractor.feature_extractor
    assert count(head.pooler) == reduce_conv == 2_359_552
    assert count(head.fc6) == fc6 == 51_384_320
    assert count(head.fc7) == fc7 == 16_781_312
    assert count(extractor.rect_conv) == rect == 308_608
    assert count(extractor) == reduce_conv + fc6 + fc7 + rect == 70_833_792


def test_rect_branch_maps_27_to_7():
    rect = SGBUnionFeatureExtractor(8, 16).rect_conv
    assert rect(torch.zeros(2, 2, 27, 27)).shape == (2, 8, 7, 7)
    kinds = [type(m).__name__ for m in rect]
    assert kinds == ["Conv2d", "ReLU", "BatchNorm2d", "MaxPool2d", "Conv2d", "ReLU", "BatchNorm2d"]
    assert rect[2].momentum == rect[6].momentum == 0.01


def test_union_features_pool_every_level_and_see_the_pair_order():
    torch.manual_seed(0)
    extractor = SGBUnionFeatureExtractor(8, 16).eval()
    features = _features()
    boxes = [torch.tensor([[4.0, 4, 11, 11], [8, 6, 15, 13], [40, 40, 60, 60]])]
    pairs = [all_ordered_pairs(3)]
    out = extractor(features, boxes, pairs, [(64, 64)])
    assert out.shape == (6, 16) and (out >= 0).all()
    # (0, 1) and (1, 0) share their union box; only the rect masks tell them apart
    assert not torch.allclose(out[0], out[2])
    # a small union box (P2 for the detector's level mapper) still reads P5
    changed = {**features, "3": features["3"] + 1.0}
    assert not torch.allclose(extractor(changed, boxes, pairs, [(64, 64)])[0], out[0])
    # P6 ("pool") is not read
    changed = {**features, "pool": features["pool"] + 1.0}
    assert torch.equal(extractor(changed, boxes, pairs, [(64, 64)]), out)


def test_all_levels_pooler_is_legacy_roi_align_per_level_concatenated():
    torch.manual_seed(0)
    pooler = SGBUnionFeatureExtractor(8, 16).feature_extractor.pooler
    features = _features()
    boxes = torch.tensor([[4.0, 4, 30, 20]])
    rois = torch.cat((torch.zeros(1, 1), boxes), dim=1)
    levels = [roi_align(features[n], rois, 7, s, 2, aligned=False)
              for n, s in zip("0123", (0.25, 0.125, 0.0625, 0.03125))]
    assert torch.allclose(pooler(features, [boxes]), pooler.reduce_channel(torch.cat(levels, dim=1)))


@pytest.fixture(scope="module")
def small_detector() -> SGBFasterRCNN:
    torch.manual_seed(0)
    return SGBFasterRCNN(SMALL_DETECTOR).eval()


def test_from_detector_copies_fc6_fc7_and_trains_everything(small_detector):
    extractor = SGBUnionFeatureExtractor.from_detector(small_detector)
    box_head = small_detector.roi_heads.box_head
    for name in ("fc6", "fc7"):
        ours, theirs = getattr(extractor.feature_extractor, name), getattr(box_head, name)
        assert torch.equal(ours.weight, theirs.weight) and ours.weight.data_ptr() != theirs.weight.data_ptr()
    assert all(p.requires_grad for p in extractor.parameters())


def test_box_feature_copy_equals_the_detector_box_head(small_detector):
    copy = SGBBoxFeatureExtractor(small_detector)
    features = _features()
    boxes = torch.tensor([[2.0, 3, 20, 30], [10, 10, 60, 50]])  # inclusive network pixels
    expected = small_detector.roi_heads.box_features(features, [to_exclusive(boxes)], [(64, 64)])
    assert torch.allclose(copy(features, [boxes], [(64, 64)]), expected)
    assert all(p.requires_grad for p in copy.parameters())
    assert copy.box_head.fc6.weight.data_ptr() != small_detector.roi_heads.box_head.fc6.weight.data_ptr()


# --- sampling -----------------------------------------------------------------------------------------------

def _relation(num_boxes: int, num_relations: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pairs = all_ordered_pairs(num_boxes)[torch.randperm(num_boxes * (num_boxes - 1), generator=g)[:num_relations]]
    relation = torch.zeros(num_boxes, num_boxes, dtype=torch.int64)
    relation[pairs[:, 0], pairs[:, 1]] = torch.randint(1, 51, (num_relations,), generator=g)
    return relation


def _check_pairs(sample, relation: torch.Tensor) -> None:
    pairs, labels = sample.pairs, sample.labels
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert len({tuple(p) for p in pairs.tolist()}) == len(pairs)
    assert torch.equal(labels, relation[pairs[:, 0], pairs[:, 1]])  # fg keep their predicate, bg are unannotated


def test_gtbox_relsample_caps_foreground_at_a_quarter_and_fills_with_background():
    relation = _relation(40, 300)
    sample = gtbox_relsample(relation, torch.Generator().manual_seed(0))
    assert SGBRelationSamplingConfig().num_positive == 256
    assert len(sample.pairs) == 1024
    assert (sample.labels[:256] > 0).all() and (sample.labels[256:] == 0).all()
    _check_pairs(sample, relation)
    annotated = (relation > 0).long()
    assert torch.equal(sample.binary, annotated | annotated.T)  # every annotated pair, sampled or not


def test_gtbox_relsample_takes_every_pair_of_a_small_image():
    relation = torch.zeros(5, 5, dtype=torch.int64)
    relation[0, 1], relation[3, 2], relation[1, 4] = 7, 20, 31
    sample = gtbox_relsample(relation, torch.Generator().manual_seed(0))
    assert sample.pairs[:3].tolist() == [[0, 1], [1, 4], [3, 2]]  # row-major, not shuffled
    assert sample.labels[:3].tolist() == [7, 31, 20]
    assert len(sample.pairs) == 5 * 4 and (sample.labels[3:] == 0).all()
    _check_pairs(sample, relation)


def test_sampling_follows_the_generator():
    relation = _relation(40, 300)
    a, b = (gtbox_relsample(relation, torch.Generator().manual_seed(1)) for _ in range(2))
    c = gtbox_relsample(relation, torch.Generator().manual_seed(2))
    assert torch.equal(a.pairs, b.pairs) and not torch.equal(a.pairs, c.pairs)


# Ground truth: g0 (label 3) --20--> g1 (label 7). Detections: d0 = g0; d1 IoU 0.9 with g1; d2 IoU exactly 0.5
# with g1 (10x5 inside 10x10); d3 = g1's box with label 5; d4 a background detection (label 0).
GT_BOXES = torch.tensor([[0.0, 0, 9, 9], [20, 0, 29, 9]])
GT_LABELS = torch.tensor([3, 7])
DETECTIONS = torch.tensor([[0.0, 0, 9, 9], [20, 0, 29, 8], [20, 0, 29, 4], [20, 0, 29, 9], [40, 40, 49, 49]])
DETECTION_LABELS = torch.tensor([3, 7, 7, 5, 0])


def test_assign_proposal_labels_matches_at_iou_at_least_one_half():
    labels = assign_proposal_labels(DETECTIONS, GT_BOXES, GT_LABELS)
    assert labels.tolist() == [3, 7, 7, 7, 0]  # d2 at exactly 0.5 is matched; d3 takes the ground truth's label


def test_detect_relsample_by_hand():
    relation = torch.zeros(2, 2, dtype=torch.int64)
    relation[0, 1] = 20
    sample = detect_relsample(DETECTIONS, DETECTION_LABELS, GT_BOXES, GT_LABELS, relation,
                              torch.Generator().manual_seed(0))
    # foreground: only (d0, d1): d2 has IoU 0.5, not > 0.5; d3 has the wrong label
    assert sample.pairs[0].tolist() == [0, 1] and sample.labels[0] == 20
    # background: the other ordered pairs of d0..d3 (d4 is background): 4 * 3 - 1
    assert len(sample.pairs) == 12 and (sample.labels[1:] == 0).all()
    assert {tuple(p) for p in sample.pairs[1:].tolist()} == {(i, j) for i in range(4) for j in range(4)
                                                            if i != j and (i, j) != (0, 1)}
    expected = torch.zeros(5, 5, dtype=torch.int64)
    expected[0, 1] = expected[1, 0] = 1
    assert torch.equal(sample.binary, expected)


def test_detect_relsample_draws_at_most_four_pairs_per_relation():
    heads = torch.tensor([[0.0, 0, 9, 9], [0, 0, 9, 8], [1, 0, 9, 9]])  # all match g0
    tails = torch.tensor([[20.0, 0, 29, 9], [20, 0, 29, 8], [21, 0, 29, 9]])  # all match g1
    boxes, labels = torch.cat((heads, tails)), torch.tensor([3, 3, 3, 7, 7, 7])
    relation = torch.tensor([[0, 20], [0, 0]])
    sample = detect_relsample(boxes, labels, GT_BOXES, GT_LABELS, relation, torch.Generator().manual_seed(0))
    candidates = {(h, t) for h in range(3) for t in range(3, 6)}
    fg = {tuple(p) for p in sample.pairs[sample.labels > 0].tolist()}
    assert len(fg) == 4 and fg <= candidates and (sample.labels[:4] == 20).all()
    bg = {tuple(p) for p in sample.pairs[sample.labels == 0].tolist()}
    assert len(bg) == 6 * 5 - 9 and not bg & candidates  # candidates left out of the draw are no background


def test_detect_relsample_weighs_the_draw_by_iou():
    # one sample per relation: (d0, d2) has IoU product 1, (d1, d2) 0.6 -> drawn with probability 1 / 1.6
    boxes = torch.tensor([[0.0, 0, 9, 9], [0, 0, 9, 5], [20, 0, 29, 9]])
    labels, relation = torch.tensor([3, 3, 7]), torch.tensor([[0, 20], [0, 0]])
    config = SGBRelationSamplingConfig(num_sample_per_gt_rel=1)
    generator = torch.Generator().manual_seed(0)
    draws = [detect_relsample(boxes, labels, GT_BOXES, GT_LABELS, relation, generator, config).pairs[0, 0].item()
             for _ in range(800)]
    assert abs(draws.count(0) / 800 - 1 / 1.6) < 0.06


def test_detect_relsample_caps_foreground_and_fills_background():
    gt_boxes = torch.tensor([[30.0 * i, 30 * j, 30 * i + 19, 30 * j + 19] for i in range(5) for j in range(4)])
    gt_labels = torch.arange(1, 21)
    relation = _relation(20, 300)
    extra = gt_boxes + 1000  # 20 detections far from every ground truth, labelled 1 (no match)
    boxes, labels = torch.cat((gt_boxes, extra)), torch.cat((gt_labels, torch.ones(20, dtype=torch.int64)))
    sample = detect_relsample(boxes, labels, gt_boxes, gt_labels, relation, torch.Generator().manual_seed(0))
    assert len(sample.pairs) == 1024
    assert (sample.labels[:256] > 0).all() and (sample.labels[256:] == 0).all()
    padded = torch.zeros(40, 40, dtype=torch.int64)
    padded[:20, :20] = relation
    _check_pairs(sample, padded)


def test_detect_relsample_placeholder_without_any_pair():
    sample = detect_relsample(DETECTIONS[:1], DETECTION_LABELS[:1], GT_BOXES, GT_LABELS,
                              torch.tensor([[0, 20], [0, 0]]), torch.Generator().manual_seed(0))
    assert sample.pairs.tolist() == [[0, 0]] and sample.labels.tolist() == [0]


def test_prepare_test_pairs():
    boxes = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15], [50, 50, 60, 60], [0, 0, 10, 10]])
    pairs = prepare_test_pairs(boxes)
    assert len(pairs) == 12 and (pairs[:, 0] != pairs[:, 1]).all()
    assert torch.equal(pairs, all_ordered_pairs(4))
    overlapping = prepare_test_pairs(boxes, require_overlap=True)
    assert {tuple(p) for p in overlapping.tolist()} == {(0, 1), (1, 0), (0, 3), (3, 0), (1, 3), (3, 1)}
    assert prepare_test_pairs(boxes[:1]).tolist() == [[0, 0]]  # SGB's placeholder, a self-pair


# --- losses -------------------------------------------------------------------------------------------------

def test_relation_loss_by_hand():
    # row 0: logits (0, 0, ln 2), label 2 -> p = 2/4; row 1: (ln 3, 0, 0), label 0 -> p = 3/5
    logits = torch.tensor([[0.0, 0.0, math.log(2)], [math.log(3), 0.0, 0.0]])
    labels = torch.tensor([2, 0])
    expected = (-math.log(0.5) - math.log(0.6)) / 2  # mean over all pairs of the batch
    assert sgb_relation_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # SGB's Label_Smoothing_Regression(e): target (1 - e) one-hot + e / K
    e, log_p = 0.01, torch.log_softmax(logits, dim=1)
    smooth = -((1 - e) * log_p[[0, 1], labels] + e / 3 * log_p.sum(dim=1)).mean()
    assert sgb_relation_loss(logits, labels, label_smoothing=e).item() == pytest.approx(smooth.item(), rel=1e-6)


def test_losses_under_sgb_names():
    losses = sgb_relation_losses(torch.zeros(4, 51), torch.tensor([0, 3, 0, 50]), torch.zeros(3, 151),
                                 torch.tensor([0, 1, 150]))
    assert losses.keys() == {"loss_rel", "loss_refine_obj"}
    assert losses["loss_rel"].item() == pytest.approx(math.log(51))
    assert losses["loss_refine_obj"].item() == pytest.approx(math.log(151))
    assert sgb_object_loss(torch.zeros(3, 151), torch.tensor([0, 1, 150])) == losses["loss_refine_obj"]
