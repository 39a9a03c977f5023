"""SGB's VG Faster R-CNN (X-101-32x8d-FPN): sizes, SGB's anchors/boxes/resizing, the SGB key map, outputs, losses.

Full size only on the meta device (no weights are made); behaviour on a small configuration of the same classes.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops.poolers import LevelMapper

from itersg.errors import UserError
from itersg.models.detectors.faster_rcnn import (
    SGB_RELATION_STAGE,
    SGBAnchorGenerator,
    SGBDetectorConfig,
    SGBFasterRCNN,
    SGBLevelMapper,
    sgb_cell_anchors,
    sgb_resize_size,
    to_exclusive,
    to_inclusive,
)
from itersg.models.weights.sgb_keys import from_sgb, load_sgb_detector, sgb_state_dict

RATIOS = (0.23232838, 0.63365731, 1.28478321, 3.15089189)
# Same classes, fewer blocks and channels, small images; score threshold 0 so that random weights detect.
SMALL = dataclasses.replace(
    SGB_RELATION_STAGE, blocks=(1, 1, 1, 1), groups=1, width_per_group=8, fpn_channels=32, mlp_dim=64,
    min_size=64, max_size=100, score_thresh=0.0, pre_nms_top_n_train=300, post_nms_top_n_train=100,
    fpn_post_nms_top_n_train=150, pre_nms_top_n_test=300, post_nms_top_n_test=100, fpn_post_nms_top_n_test=150,
    roi_batch_size_per_image=64)


@pytest.fixture(scope="module")
def full_size() -> SGBFasterRCNN:
    with torch.device("meta"):
        return SGBFasterRCNN()


def small_model(seed: int = 0, config: SGBDetectorConfig = SMALL) -> SGBFasterRCNN:
    torch.manual_seed(seed)
    return SGBFasterRCNN(config).eval()


def images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 256, (3, 80, 120), dtype=torch.uint8, generator=g),
            torch.randint(0, 256, (3, 100, 70), dtype=torch.uint8, generator=g)]


def targets() -> list[dict[str, torch.Tensor]]:
    return [{"boxes": torch.tensor([[10.0, 10, 50, 60], [60, 20, 110, 70]]), "labels": torch.tensor([3, 7])},
            {"boxes": torch.tensor([[5.0, 5, 60, 90]]), "labels": torch.tensor([150])}]


# --- sizes ----------------------------------------------------------------------------------------------


def resnext_stage(in_ch: int, width: int, out_ch: int, blocks: int, groups: int = 32) -> int:
    """Bias-free convs of a ResNeXt stage: 1x1 in->width, grouped 3x3 width->width, 1x1 width->out, and a
    1x1 in->out projection on the first block (frozen BN holds buffers, not parameters)."""
    def block(c_in: int) -> int:
        return c_in * width + width * (width // groups) * 9 + width * out_ch

    return block(in_ch) + in_ch * out_ch + (blocks - 1) * block(out_ch)


def expected_parts() -> dict[str, int]:
    """Parameter counts that SGB's config implies (NUM_GROUPS 32 x WIDTH_PER_GROUP 8 = 256 channels in
    res2's 3x3; RES2_OUT_CHANNELS 256; FPN 256; 4 anchors per cell; 7x7 pooling; MLP 4096; 151 classes)."""
    fpn = sum(c * 256 + 256 for c in (256, 512, 1024, 2048)) + 4 * (256 * 256 * 9 + 256)
    return {
        "backbone.body.conv1.": 3 * 64 * 7 * 7,
        "backbone.body.layer1.": resnext_stage(64, 256, 256, 3),
        "backbone.body.layer2.": resnext_stage(256, 512, 512, 4),
        "backbone.body.layer3.": resnext_stage(512, 1024, 1024, 23),
        "backbone.body.layer4.": resnext_stage(1024, 2048, 2048, 3),
        "backbone.fpn.": fpn,
        "rpn.head.": (256 * 256 * 9 + 256) + (256 * 4 + 4) + (256 * 4 * 4 + 4 * 4),
        "roi_heads.box_head.fc6.": 256 * 7 * 7 * 4096 + 4096,
        "roi_heads.box_head.fc7.": 4096 * 4096 + 4096,
        "roi_heads.box_predictor.cls_score.": 4096 * 151 + 151,
        "roi_heads.box_predictor.bbox_pred.": 4096 * 151 * 4 + 151 * 4,
    }


def test_full_size_parameter_count_part_by_part(full_size):
    params = dict(full_size.named_parameters())
    counted = {part: sum(p.numel() for k, p in params.items() if k.startswith(part)) for part in expected_parts()}
    assert counted == expected_parts()
    assert sum(p.numel() for p in params.values()) == sum(expected_parts().values()) == 161_737_927
    frozen = expected_parts()["backbone.body.conv1."] + expected_parts()["backbone.body.layer1."]
    trainable = sum(p.numel() for p in params.values() if p.requires_grad)
    assert trainable == 161_737_927 - frozen == 161_312_775  # FREEZE_CONV_BODY_AT 2: stem and layer1


def test_full_size_settings_are_sgbs():
    config, relation = SGBDetectorConfig(), SGB_RELATION_STAGE
    train = (config.pre_nms_top_n_train, config.post_nms_top_n_train, config.fpn_post_nms_top_n_train)
    assert train == (12000, 2000, 2000)
    assert (config.pre_nms_top_n_test, config.post_nms_top_n_test, config.fpn_post_nms_top_n_test) == (6000, 1000, 2000)
    assert (config.nms, config.score_thresh, config.detections_per_img, config.nms_filter_duplicates) == (
        0.3, 0.01, 256, False)
    assert (relation.detections_per_img, relation.nms_filter_duplicates, relation.fpn_post_nms_top_n_test) == (
        80, True, 1000)
    assert config.aspect_ratios == RATIOS and config.pooler_sampling_ratio == 2


# --- SGB's box conventions, anchors, levels and resizing ------------------------------------------------


def test_anchor_matches_sgb_generate_anchors_hand_worked():
    """SGB, stride 4, size 32, ratio 0.23232838: base window 4x4 (area 16); width round(sqrt(16 / 0.23232838))
    = round(8.299) = 8, height round(8 * 0.23232838) = round(1.859) = 2; scaled by 32 / 4 to 64 x 16;
    centre (4 - 1) / 2 = 1.5; corners 1.5 -/+ (64 - 1) / 2 and 1.5 -/+ (16 - 1) / 2."""
    by_hand = torch.tensor([1.5 - 31.5, 1.5 - 7.5, 1.5 + 31.5, 1.5 + 7.5])
    assert by_hand.tolist() == [-30.0, -6.0, 33.0, 9.0]
    assert torch.equal(sgb_cell_anchors(4, 32, RATIOS)[0], by_hand)
    generator = SGBAnchorGenerator((32, 64, 128, 256, 512), RATIOS, (4, 8, 16, 32, 64))
    maps = [torch.zeros(1, 1, n, n) for n in (8, 4, 2, 1, 1)]
    anchors = to_inclusive(generator(ImageList(torch.zeros(1, 3, 32, 32), [(32, 32)]), maps)[0])
    assert torch.equal(anchors[0], by_hand)  # first cell of P2, first ratio
    assert torch.equal(anchors[4], by_hand + torch.tensor([4.0, 0, 4, 0]))  # next cell: one stride right
    # Rounding difference: torchvision's generator keeps 32 / sqrt(r) x 32 * sqrt(r) = 66.4 x 15.4 and
    # rounds the corners around 0: 67 x 17 pixels (inclusive) instead of SGB's 64 x 16, centred at 0, not 1.5.
    torchvision = AnchorGenerator(((32,),), (RATIOS,)).cell_anchors[0][0]
    assert torchvision.tolist() == [-33.0, -8.0, 33.0, 8.0]


def test_p6_anchors_use_stride_64_when_the_p5_grid_is_odd():
    generator = SGBAnchorGenerator((32, 64, 128, 256, 512), RATIOS, (4, 8, 16, 32, 64))
    sizes = (152, 76, 38, 19, 10)  # a 608-pixel side: P5 has 19 cells, P6 10
    maps = [torch.zeros(1, 1, 1, n) for n in sizes]
    anchors = generator(ImageList(torch.zeros(1, 3, 32, 608), [(32, 608)]), maps)[0]
    p6 = anchors[-4 * 10:]
    assert (p6[4, 0] - p6[0, 0]).item() == 64.0  # torchvision would infer 608 // 10 = 60


def test_box_coding_is_maskrcnn_benchmarks_plus_one():
    from torchvision.models.detection._utils import BoxCoder

    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    proposal = torch.tensor([[0.0, 0.0, 9.0, 9.0]])  # inclusive: 10 x 10 pixels, centre 5
    deltas = torch.tensor([[10.0 * 0.1, 0.0, 5.0 * math.log(2.0), 0.0]])  # shift 1 pixel, double the width
    decoded = to_inclusive(coder.decode_single(deltas, to_exclusive(proposal)))
    # x: centre 5 + 1 = 6, width 20 -> [6 - 10, 6 + 10 - 1]; y unchanged
    assert torch.allclose(decoded, torch.tensor([[-4.0, 0.0, 15.0, 9.0]]))
    assert torch.allclose(coder.encode_single(to_exclusive(decoded), to_exclusive(proposal)), deltas, atol=1e-6)


def test_fpn_level_uses_plus_one_areas():
    box = [torch.tensor([[0.0, 0.0, 223.0, 223.0]])]  # inclusive 224 x 224: the canonical box, level 4
    assert SGBLevelMapper(2, 5)(box).item() == 2  # P4 (index 2 of P2..P5)
    assert LevelMapper(2, 5)(box).item() == 1  # torchvision: 223 x 223 -> P3


@pytest.mark.parametrize(("size", "expected"), [((480, 640), (600, 800)), ((500, 1200), (417, 1000)),
                                                ((600, 900), (600, 900)), ((1000, 400), (1000, 400))])
def test_resize_follows_sgb_get_size(size, expected):
    # (500, 1200): 1200 / 500 * 600 > 1000, so the short side is round(1000 * 500 / 1200) = 417
    assert sgb_resize_size(*size, 600, 1000) == expected


def test_rpn_ignores_anchors_straddling_the_image():
    model = small_model()
    anchors = [to_exclusive(torch.tensor([[0.0, 0.0, 31.0, 31.0], [-1.0, 0.0, 30.0, 31.0], [0.0, 0.0, 32.0, 31.0]]))]
    target = [{"boxes": to_exclusive(torch.tensor([[0.0, 0.0, 31.0, 31.0]])), "image_size": torch.tensor([40, 32])}]
    labels, _ = model.rpn.assign_targets_to_anchors(anchors, target)
    assert labels[0].tolist() == [1.0, -1.0, -1.0]  # x1 < 0 and x2 >= width are not visible


# --- SGB key map ------------------------------------------------------------------------------------------


def sgb_key_names(config: SGBDetectorConfig) -> set[str]:
    """Every key of SGB's detector state dict, written from maskrcnn-benchmark's module names."""
    bn = ("weight", "bias", "running_mean", "running_var")
    keys = {"backbone.body.stem.conv1.weight", *(f"backbone.body.stem.bn1.{b}" for b in bn)}
    for stage, blocks in enumerate(config.blocks, 1):
        for block in range(blocks):
            prefix = f"backbone.body.layer{stage}.{block}."
            keys |= {f"{prefix}conv{i}.weight" for i in (1, 2, 3)}
            keys |= {f"{prefix}bn{i}.{b}" for i in (1, 2, 3) for b in bn}
            if block == 0:
                keys |= {f"{prefix}downsample.0.weight", *(f"{prefix}downsample.1.{b}" for b in bn)}
    keys |= {f"backbone.fpn.fpn_{kind}{i}.{p}" for kind in ("inner", "layer") for i in range(1, 5)
             for p in ("weight", "bias")}
    keys |= {f"rpn.head.{m}.{p}" for m in ("conv", "cls_logits", "bbox_pred") for p in ("weight", "bias")}
    keys |= {f"rpn.anchor_generator.cell_anchors.{i}" for i in range(5)}
    keys |= {f"roi_heads.box.feature_extractor.fc{i}.{p}" for i in (6, 7) for p in ("weight", "bias")}
    keys |= {f"roi_heads.box.predictor.{m}.{p}" for m in ("cls_score", "bbox_pred") for p in ("weight", "bias")}
    return keys


def test_full_size_state_dict_has_exactly_sgbs_keys(full_size):
    state = sgb_state_dict(full_size)
    assert set(state) == sgb_key_names(SGBDetectorConfig())
    renamed, problems, ignored = from_sgb(full_size, state)
    assert problems == []  # zero missing, zero unexpected, no shape or anchor difference
    assert set(renamed) == set(full_size.state_dict())
    assert ignored == sorted(f"rpn.anchor_generator.cell_anchors.{i}" for i in range(5))


def test_sgb_checkpoint_round_trips_with_the_same_outputs(tmp_path):
    source, target = small_model(seed=0), small_model(seed=1)
    state = sgb_state_dict(source)
    assert set(state) == sgb_key_names(SMALL)
    relation_key = "roi_heads.relation.predictor.rel_compress.weight"  # an SGB relation-stage checkpoint
    path = tmp_path / "model_final.pth"
    torch.save({"model": {"module." + k: v for k, v in {**state, relation_key: torch.zeros(2)}.items()},
                "iteration": 50000}, path)
    report = load_sgb_detector(target, path)
    assert (report.source_format, report.loaded, report.initialised) == ("sgb", len(source.state_dict()), ())
    assert relation_key in report.ignored
    with torch.no_grad():
        expected, got = source(images()), target(images())
    for a, b in zip(expected, got):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_missing_unexpected_and_anchor_differences_are_refused():
    model = small_model()
    state = sgb_state_dict(model)
    state.pop("roi_heads.box.feature_extractor.fc7.bias")
    state["roi_heads.box.feature_extractor.fc8.weight"] = torch.zeros(1)
    with pytest.raises(UserError, match=r"unexpected keys 1 .*missing keys 1"):
        load_sgb_detector(model, state)
    other = SGBFasterRCNN(dataclasses.replace(SMALL, aspect_ratios=(0.5, 1.0, 2.0, 3.0)))
    with pytest.raises(UserError, match="anchors of level 0 differ"):
        load_sgb_detector(model, sgb_state_dict(other))


# --- outputs and training ---------------------------------------------------------------------------------


def test_eval_returns_at_most_80_detections_with_one_label_per_box():
    model = small_model()
    with torch.no_grad():
        outputs = model(images())
    for output, image in zip(outputs, images()):
        k = len(output["boxes"])
        assert 0 < k <= 80
        assert output["scores"].shape == output["labels"].shape == (k,)
        assert output["class_logits"].shape == (k, 151) and output["box_features"].shape == (k, 64)
        assert output["boxes_per_class"].shape == (k, 151, 4)
        assert output["labels"].min() >= 1 and output["labels"].max() <= 150  # SGB's 1-based labels
        assert len(torch.unique(output["boxes"], dim=0)) == k  # one label per box
        assert torch.allclose(output["boxes_per_class"][torch.arange(k), output["labels"]], output["boxes"])
        height, width = image.shape[-2:]
        assert output["boxes"].min() >= 0 and output["boxes"][:, 2].max() <= width - 1 + 1e-3
        assert output["boxes"][:, 3].max() <= height - 1 + 1e-3  # inclusive pixels of the input image


def test_detector_config_may_keep_several_labels_per_box():
    model = small_model(config=dataclasses.replace(SMALL, nms_filter_duplicates=False, detections_per_img=500))
    with torch.no_grad():
        output = model(images()[:1])[0]
    assert len(torch.unique(output["boxes_per_class"][:, 0], dim=0)) < len(output["boxes"]) <= 500


def test_box_head_on_given_boxes():
    model = small_model()
    boxes = [t["boxes"] for t in targets()]
    with torch.no_grad():
        outputs = model.predict_on_boxes(images(), boxes)
    assert [tuple(o["box_features"].shape) for o in outputs] == [(2, 64), (1, 64)]
    assert [tuple(o["class_logits"].shape) for o in outputs] == [(2, 151), (1, 151)]
    assert all((o["box_features"] >= 0).all() for o in outputs)  # fc7 after ReLU


def test_training_losses_are_finite_and_reach_the_heads_not_the_frozen_stem():
    model = small_model().train()
    losses = model(images(), targets())
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name in ("roi_heads.box_head.fc6.weight", "rpn.head.conv.0.0.weight", "rpn.head.cls_logits.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    for name in ("backbone.body.conv1.weight", "backbone.body.layer1.0.conv1.weight"):
        parameter = model.get_parameter(name)
        assert not parameter.requires_grad and parameter.grad is None, name
    assert model.get_parameter("backbone.body.layer2.0.conv1.weight").grad is not None
