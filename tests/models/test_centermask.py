"""CenterMask heads: exact parameter counts, FCOS assignment and loss, inert mask heads, centermask2 keys."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from itersg.errors import UserError
from itersg.models.backbones.vovnet import build_vovnet_fpn
from itersg.models.detectors.centermask import build_centermask_heads, detectron2_head_key
from itersg.models.detectors.fcos import (
    SIZES_OF_INTEREST,
    centerness_targets,
    fcos_box_loss,
    fcos_targets,
    level_locations,
)
from itersg.models.weights.vovnet_weights import load_detectron2_weights, to_detectron2_state_dict

PUBLISHED_TOTALS = {"vovnet39-detr": 79_102_606, "vovnet57-detr": 95_362_190, "vovnet99-detr": 123_408_270,
                    "vovnet39-centermask": 103_168_224, "vovnet57-centermask": 119_427_808,
                    "vovnet99-centermask": 147_473_888}
BACKBONE_FPN = {39: 28_704_704, 57: 44_964_288, 99: 73_010_368}
DETR_PART = 50_397_902
CENTERMASK_HEADS = 24_065_618

# Read off centermask2's FCOSHead (towers of conv, GroupNorm, ReLU), SpatialAttentionMaskHead and MaskIoUHead.
REFERENCE_HEADS = [
    ("proposal_generator.fcos_head.cls_tower.0.weight", (256, 256, 3, 3)),
    ("proposal_generator.fcos_head.cls_tower.1.weight", (256,)),
    ("proposal_generator.fcos_head.bbox_tower.9.weight", (256, 256, 3, 3)),
    ("proposal_generator.fcos_head.bbox_tower.10.bias", (256,)),
    ("proposal_generator.fcos_head.cls_logits.weight", (150, 256, 3, 3)),
    ("proposal_generator.fcos_head.bbox_pred.bias", (4,)),
    ("proposal_generator.fcos_head.ctrness.weight", (1, 256, 3, 3)),
    ("proposal_generator.fcos_head.scales.4.scale", (1,)),
    ("roi_heads.mask_head.mask_fcn1.weight", (256, 256, 3, 3)),
    ("roi_heads.mask_head.mask_fcn4.bias", (256,)),
    ("roi_heads.mask_head.spatialAtt.conv.weight", (1, 2, 3, 3)),
    ("roi_heads.mask_head.deconv.weight", (256, 256, 2, 2)),
    ("roi_heads.mask_head.predictor.weight", (80, 256, 1, 1)),
    ("roi_heads.maskiou_head.maskiou_fcn1.weight", (256, 257, 3, 3)),
    ("roi_heads.maskiou_head.maskiou_fcn4.weight", (256, 256, 3, 3)),
    ("roi_heads.maskiou_head.maskiou_fc1.weight", (1024, 256 * 7 * 7)),
    ("roi_heads.maskiou_head.maskiou_fc2.bias", (1024,)),
    ("roi_heads.maskiou_head.maskiou.weight", (80, 1024)),
]


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def heads():
    return build_centermask_heads()


def test_head_parameter_counts_match_published(heads):
    assert _count(heads.fcos) == 5_082_016
    assert _count(heads.mask_head) == 2_643_298
    assert _count(heads.maskiou_head) == 16_340_304
    assert _count(heads) == CENTERMASK_HEADS
    for depth in (39, 57, 99):
        total = BACKBONE_FPN[depth] + DETR_PART + CENTERMASK_HEADS
        assert total == PUBLISHED_TOTALS[f"vovnet{depth}-centermask"]


@pytest.mark.skipif(importlib.util.find_spec("itersg.models.registry") is None, reason="no registry yet")
@pytest.mark.parametrize("variant", list(PUBLISHED_TOTALS))
def test_registry_totals_match_published(variant):
    from itersg.models.registry import build_model, count_parameters

    counts = count_parameters(build_model(variant))
    assert counts["total"] == PUBLISHED_TOTALS[variant]
    assert counts["backbone"] == BACKBONE_FPN[int(variant[6:8])]


def test_mask_heads_are_inert_but_counted(heads):
    assert not any(p.requires_grad for p in heads.mask_head.parameters())
    assert not any(p.requires_grad for p in heads.maskiou_head.parameters())
    assert all(p.requires_grad for p in heads.fcos.parameters())
    calls = []
    for head in (heads.mask_head, heads.maskiou_head):
        head.register_forward_hook(lambda *args: calls.append(1))
    features = {name: torch.randn(1, 256, size, size) for name, size in zip(("P3", "P4", "P5", "P6", "P7"),
                                                                          (8, 4, 2, 1, 1))}
    with torch.no_grad():
        heads(features)
    assert calls == []


def test_mask_heads_run_on_roi_features():
    small = build_centermask_heads(in_channels=32, overrides={"small": True})
    rois = torch.randn(3, 32, 14, 14)
    masks = small.mask_head(rois)
    assert masks.shape == (3, 80, 28, 28)
    assert small.maskiou_head(rois, masks[:, :1].sigmoid()).shape == (3, 80)


def test_forward_outputs_per_level():
    small = build_centermask_heads(num_classes=5, in_channels=16, overrides={"small": True})
    sizes = {"P3": (8, 12), "P4": (4, 6), "P5": (2, 3), "P6": (1, 2), "P7": (1, 1)}
    out = small({name: torch.randn(2, 16, *hw) for name, hw in sizes.items()})
    assert out["strides"] == [8, 16, 32, 64, 128]
    for level, (h, w) in enumerate(sizes.values()):
        assert out["logits"][level].shape == (2, 5, h, w)
        assert out["ltrb"][level].shape == (2, 4, h, w) and (out["ltrb"][level] >= 0).all()
        assert out["centerness"][level].shape == (2, 1, h, w)
        assert out["locations"][level].shape == (h * w, 2)
    assert out["locations"][1][:2].tolist() == [[8, 8], [24, 8]]  # P4: stride 16, cell centres


@pytest.mark.parametrize(("overrides", "message"), [
    ({"towers": 2}, "unknown key"), ({"num_convs": 0}, "num_convs"),
    ({"mask_conv_dim": 1.5}, "mask_conv_dim")])
def test_bad_head_overrides_raise_user_error(overrides, message):
    with pytest.raises(UserError, match=message):
        build_centermask_heads(overrides=overrides)


# FCOS targets -----------------------------------------------------------------------------------

STRIDES = (8, 16, 32, 64, 128)


def _locations(height: int, width: int) -> list[torch.Tensor]:
    return [level_locations(-(-height // s), -(-width // s), s) for s in STRIDES]


def _reference_targets(locations, boxes, labels, num_classes, radius=1.5):
    """Location-by-location, box-by-box transcription of the FCOS rules (slow, obviously right)."""
    out_labels, out_ltrb = [], []
    for level, points in enumerate(locations):
        stride, (low, high) = STRIDES[level], SIZES_OF_INTEREST[level]
        for x, y in points.tolist():
            best, best_area = None, float("inf")
            for index, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
                cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                rx1, ry1 = max(cx - stride * radius, x1), max(cy - stride * radius, y1)
                rx2, ry2 = min(cx + stride * radius, x2), min(cy + stride * radius, y2)
                if not (x > rx1 and y > ry1 and x < rx2 and y < ry2):
                    continue
                ltrb = (x - x1, y - y1, x2 - x, y2 - y)
                area = (x2 - x1) * (y2 - y1)
                if low <= max(ltrb) <= high and area < best_area:
                    best, best_area = (index, [d / stride for d in ltrb]), area
            out_labels.append(num_classes if best is None else int(labels[best[0]]))
            out_ltrb.append(best[1] if best else None)
    return out_labels, out_ltrb


def test_assignment_of_one_box_by_hand():
    boxes, labels = torch.tensor([[100.0, 100.0, 140.0, 160.0]]), torch.tensor([3])
    assigned, ltrb = fcos_targets(_locations(256, 256), STRIDES, boxes, labels, num_classes=10)
    points = torch.cat(_locations(256, 256))
    positive = (assigned != 10).nonzero()[:, 0]
    # centre (120, 130) +- 12 pixels on P3 (stride 8): x in {116, 124}, y in {124, 132, 140}
    assert sorted(map(tuple, points[positive].tolist())) == [(x, y) for x in (116.0, 124.0)
                                                             for y in (124.0, 132.0, 140.0)]
    assert (assigned[positive] == 3).all()
    first = positive[0]
    x, y = points[first].tolist()
    assert ltrb[first].tolist() == pytest.approx([(x - 100) / 8, (y - 100) / 8, (140 - x) / 8, (160 - y) / 8])


def test_assignment_matches_the_rules_on_random_scenes():
    g = torch.Generator().manual_seed(1)
    height, width, num_classes = 320, 416, 7
    for _ in range(3):
        corners = torch.rand(12, 2, generator=g) * torch.tensor([width, height])
        sizes = 8 + torch.rand(12, 2, generator=g) ** 2 * torch.tensor([width, height])
        boxes = torch.cat([corners, (corners + sizes).minimum(torch.tensor([width, height]))], dim=1)
        labels = torch.randint(num_classes, (12,), generator=g)
        locations = _locations(height, width)
        assigned, ltrb = fcos_targets(locations, STRIDES, boxes, labels, num_classes)
        expected_labels, expected_ltrb = _reference_targets(locations, boxes, labels, num_classes)
        assert assigned.tolist() == expected_labels
        positive = [i for i, value in enumerate(expected_ltrb) if value is not None]
        assert len(positive) > 20
        assert torch.allclose(ltrb[positive], torch.tensor([expected_ltrb[i] for i in positive]), atol=1e-5)


def test_smaller_box_wins_where_both_qualify():
    boxes = torch.tensor([[40.0, 40.0, 100.0, 100.0], [36.0, 36.0, 108.0, 104.0]])
    assigned, _ = fcos_targets(_locations(160, 160), STRIDES, boxes, torch.tensor([0, 1]), num_classes=2)
    # both centre regions hold the P3 cells x, y in {60, 68, 76} (B's without x = 60): A is smaller
    assert int((assigned == 0).sum()) == 9 and int((assigned == 1).sum()) == 0


def test_boxes_go_to_the_level_of_their_size():
    boxes = torch.tensor([[0.0, 0.0, 400.0, 400.0], [176.0, 176.0, 224.0, 224.0]])
    assigned, _ = fcos_targets(_locations(400, 400), STRIDES, boxes, torch.tensor([0, 1]), num_classes=2)
    per_level = assigned.split([len(loc) for loc in _locations(400, 400)])
    # the 48-pixel box: max distance <= 64 -> P3; the 400-pixel box: 200 + offset in 128..512 -> P5, P6
    assert set(per_level[0].tolist()) == {1, 2}
    assert set(per_level[1].tolist()) == {2}
    assert set(per_level[2].tolist()) == {0, 2} and set(per_level[3].tolist()) == {0, 2}
    assert set(per_level[4].tolist()) == {2}  # P7 takes distances over 512 only


def test_no_boxes_means_all_background():
    no_labels = torch.zeros(0, dtype=torch.long)
    assigned, ltrb = fcos_targets(_locations(64, 64), STRIDES, torch.zeros(0, 4), no_labels, num_classes=4)
    assert (assigned == 4).all() and (ltrb == 0).all()


def test_centerness_targets():
    ltrb = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 2.0], [1.0, 1.0, 4.0, 9.0]])
    assert centerness_targets(ltrb).tolist() == pytest.approx([1.0, (1 / 3) ** 0.5, (1 / 4 * 1 / 9) ** 0.5])


# loss ------------------------------------------------------------------------------------------

def _synthetic_batch():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 128, 128, generator=g) * 0.1
    boxes = [torch.tensor([[10.0, 12.0, 60.0, 50.0], [70.0, 64.0, 120.0, 124.0]]),
             torch.tensor([[30.0, 20.0, 98.0, 110.0]])]
    for image, image_boxes in zip(images, boxes):
        for x1, y1, x2, y2 in image_boxes.long().tolist():
            image[:, y1:y2, x1:x2] += 1.0
    targets = [{"boxes": boxes[0], "labels": torch.tensor([1, 2])},
               {"boxes": boxes[1], "labels": torch.tensor([0])}]
    return images, targets


def test_fcos_loss_is_finite_and_decreases():
    torch.manual_seed(0)
    backbone = build_vovnet_fpn(39, overrides={"small": True})
    heads = build_centermask_heads(num_classes=3, in_channels=backbone.out_channels,
                                   overrides={"small": True})
    images, targets = _synthetic_batch()
    parameters = [p for p in (*backbone.parameters(), *heads.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)
    totals = []
    for _ in range(8):
        losses = heads.loss(heads(backbone(images)), targets, [(128, 128), (128, 128)])
        assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
        assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert totals[-1] < 0.8 * totals[0]
    assert all(p.grad is None for p in heads.mask_head.parameters())


def test_fcos_loss_without_boxes_is_finite_and_backpropagates():
    heads = build_centermask_heads(num_classes=3, in_channels=16, overrides={"small": True})
    sizes = {"P3": 8, "P4": 4, "P5": 2, "P6": 1, "P7": 1}
    features = {name: torch.randn(1, 16, s, s) for name, s in sizes.items()}
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    losses = heads.loss(heads(features), empty, [(64, 64)])
    assert losses["loss_fcos_loc"].item() == 0 and losses["loss_fcos_ctr"].item() == 0
    sum(losses.values()).backward()
    assert heads.fcos.cls_logits.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="targets"):
        heads.loss(heads(features), empty * 2, [(64, 64)])


# centermask2 checkpoints -----------------------------------------------------------------------

def test_reference_head_key_names_and_shapes(heads):
    names = {detectron2_head_key(name): tuple(t.shape) for name, t in heads.state_dict().items()}
    for name, shape in REFERENCE_HEADS:
        assert names[name] == shape, name
    assert len(names) == 43 + 13 + 14  # FCOS, SAG-Mask, MaskIoU


def test_centermask_round_trip_and_partial_files(tmp_path):
    def build(num_classes=4):
        # FrozenBN as in the released CenterMask checkpoints (the small preset trains its norms)
        backbone = build_vovnet_fpn(39, overrides={"small": True, "norm": "FrozenBN"})
        return backbone, build_centermask_heads(num_classes=num_classes, in_channels=backbone.out_channels,
                                                overrides={"small": True})

    source_backbone, source_heads = build()
    with torch.no_grad():
        for tensor in (*source_backbone.state_dict().values(), *source_heads.state_dict().values()):
            tensor.uniform_(0.5, 1.5)
    full = to_detectron2_state_dict(source_backbone, source_heads)
    assert any(k.startswith("roi_heads.maskiou_head.maskiou_fcn1.") for k in full)
    torch.save({"model": full, "iteration": 270000}, tmp_path / "centermask.pth")

    backbone, heads = build()
    report = load_detectron2_weights(backbone, tmp_path / "centermask.pth", heads)
    assert report.kept_init == [] and report.ignored == []
    for source, target in ((source_backbone, backbone), (source_heads, heads)):
        for name, tensor in source.state_dict().items():
            assert torch.equal(target.state_dict()[name], tensor), name

    backbone_only, _ = build()
    report = load_detectron2_weights(backbone_only, tmp_path / "centermask.pth")
    assert len(report.ignored) == (43 - 24) + (13 - 6) + (14 - 6)  # small heads: 1 conv per tower / head
    assert all(name.startswith(("proposal_generator.", "roi_heads.")) for name in report.ignored)

    without_heads = {k: v for k, v in full.items() if k.startswith("backbone.")}
    torch.save({"model": without_heads}, tmp_path / "backbone.pth")
    backbone, heads = build()
    report = load_detectron2_weights(backbone, tmp_path / "backbone.pth", heads)
    assert sorted(report.kept_init) == sorted(f"heads.{k}" for k in heads.state_dict())


def test_coco_classifier_needs_permission(tmp_path):
    backbone = build_vovnet_fpn(39, overrides={"small": True})
    small = {"in_channels": backbone.out_channels, "overrides": {"small": True}}
    coco_heads = build_centermask_heads(num_classes=80, **small)
    torch.save({"model": to_detectron2_state_dict(backbone, coco_heads)}, tmp_path / "coco.pth")
    vg_heads = build_centermask_heads(num_classes=150, **small)
    with pytest.raises(UserError, match="shape mismatches 2"):
        load_detectron2_weights(backbone, tmp_path / "coco.pth", vg_heads)
    report = load_detectron2_weights(backbone, tmp_path / "coco.pth", vg_heads, num_classes_may_differ=True)
    assert sorted(report.kept_init) == ["heads.fcos.cls_logits.bias", "heads.fcos.cls_logits.weight"]
    assert torch.equal(vg_heads.fcos.bbox_pred.weight, coco_heads.fcos.bbox_pred.weight)


def test_fcos_box_loss_is_centermask2s_smoothed_giou_worked_by_hand():
    """Two positives, distances (left, top, right, bottom) in stride units.

    1. prediction (1, 1, 1, 1), target (1, 1, 1, 1): areas 4 and 4, intersection 4, union 4, enclosing 4:
       IoU (4 + 1) / (4 + 1) = 1, GIoU 1, loss 0; centerness target sqrt(1 * 1) = 1.
    2. prediction (1, 1, 1, 1), target (3, 1, 1, 1): areas 4 and 4 x 2 = 8; intersection
       (min(1, 3) + min(1, 1)) x (1 + 1) = 4; union 8 + 4 - 4 = 8; enclosing (3 + 1) x 2 = 8:
       IoU (4 + 1) / (8 + 1) = 5/9, GIoU 5/9 - (8 - 8)/8 = 5/9, loss 4/9; centerness sqrt(1/3 x 1/1).
    Loss = (0 x 1 + 4/9 x sqrt(1/3)) / (1 + sqrt(1/3)) = 0.162675... The plain GIoU (IoU 4/8) gives
    (1/2 x sqrt(1/3)) / (1 + sqrt(1/3)) = 0.183013...
    """
    prediction = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    target = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, 1.0, 1.0, 1.0]])
    third = (1 / 3) ** 0.5
    expected = (4 / 9 * third) / (1 + third)
    assert fcos_box_loss(prediction, target).item() == pytest.approx(expected, rel=1e-6)
    assert fcos_box_loss(prediction, target).item() != pytest.approx((1 / 2 * third) / (1 + third), rel=1e-3)
