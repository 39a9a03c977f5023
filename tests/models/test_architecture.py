"""The R-101 IterativeSG model: exact parameter counts, backbone layout, output contract, registry."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from itersg.cli import main
from itersg.errors import UserError
from itersg.models import VARIANTS, build_detr, build_model, count_parameters
from itersg.models.backbones.resnet import build_resnet
from itersg.models.config import resnet_config
from itersg.models.relation.iterativesg import IterativeSG

R101_BACKBONE = 42_394_816
R101_TOTAL = 93_251_470


@pytest.fixture(scope="module")
def r101() -> nn.Module:
    torch.manual_seed(0)
    return build_model("r101-detr").eval()


def test_r101_parameter_counts_are_the_published_ones(r101):
    counts = count_parameters(r101)
    assert counts["backbone"] == R101_BACKBONE
    assert counts["total"] == R101_TOTAL
    assert counts["total"] - counts["backbone"] == 50_856_654
    frozen = sum(p.numel() for m in (r101.backbone.stem, r101.backbone.res2) for p in m.parameters())
    assert counts["trainable"] == R101_TOTAL - frozen


def test_r101_backbone_is_the_detectron2_msra_layout(r101):
    backbone = r101.backbone
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    assert all(isinstance(c.norm, FrozenBatchNorm2d) and c.bias is None for c in convs)
    assert [len(getattr(backbone, s)) for s in ("res2", "res3", "res4", "res5")] == [3, 4, 23, 3]
    # the stride sits in the 3x3 conv of the first block of res3..res5
    for stage in ("res3", "res4", "res5"):
        first = getattr(backbone, stage)[0]
        assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)
        assert first.shortcut.stride == (2, 2)
    assert backbone.res2[0].conv2.stride == (1, 1) and backbone.res2[1].shortcut is None
    assert all(not p.requires_grad for m in (backbone.stem, backbone.res2) for p in m.parameters())
    assert all(p.requires_grad for p in backbone.res3.parameters())
    assert backbone.out_feature == "res5" and backbone.out_channels == 2048
    features = backbone(torch.zeros(1, 3, 64, 96))
    assert features["res5"].shape == (1, 2048, 2, 3)


def test_r101_normalises_as_the_released_checkpoints_were_trained(r101):
    # configs/iterative_model.yaml: RGB input, torchvision statistics (not the MSRA BGR convention)
    assert r101.backbone.input_format == "RGB"
    assert r101.backbone.pixel_mean == pytest.approx([123.675, 116.28, 103.53])
    assert r101.backbone.pixel_std == pytest.approx([58.395, 57.12, 57.375])


def test_full_size_forward_returns_every_layer(r101):
    images = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8), torch.randint(0, 256, (3, 48, 64),
                                                                                    dtype=torch.uint8)]
    with torch.no_grad():
        out = r101(images)
    expected = {"pred_sub_logits": 151, "pred_obj_logits": 151, "pred_rel_logits": 51,
                "pred_sub_boxes": 4, "pred_obj_boxes": 4, "pred_rel_boxes": 4}
    assert len(out["aux_outputs"]) == 5
    for layer in [out, *out["aux_outputs"]]:
        for key, width in expected.items():
            assert layer[key].shape == (2, 300, width)
    boxes = torch.cat([out[k] for k in ("pred_sub_boxes", "pred_obj_boxes", "pred_rel_boxes")])
    assert boxes.min() >= 0 and boxes.max() <= 1 and torch.isfinite(out["pred_rel_logits"]).all()


def test_conditioning_layers_start_at_zero(r101):
    decoder = r101.transformer.decoder
    projections = [decoder.object_query_proj, decoder.relation_query_proj, decoder.subject_graph_proj,
                   decoder.object_graph_proj, decoder.relation_graph_proj]
    assert [len(p) for p in projections] == [6, 6, 5, 5, 5]
    for linears in projections:
        for linear in linears:
            assert not linear.weight.any() and not linear.bias.any()
    assert decoder.subject_layers[0].linear1.weight.any()


def test_detr_has_300_queries_and_the_same_backbone():
    torch.manual_seed(0)
    detr = build_detr("r101-detr")
    counts = count_parameters(detr)
    assert counts["backbone"] == R101_BACKBONE
    # IterativeSG minus two decoders, the conditioning layers, two query sets and the predicate head
    assert counts["total"] == 60_531_035
    with torch.no_grad():
        out = detr.eval()([torch.zeros(3, 64, 64, dtype=torch.uint8)])
    assert out["pred_logits"].shape == (1, 300, 151) and out["pred_boxes"].shape == (1, 300, 4)
    assert len(out["aux_outputs"]) == 5


def test_small_overrides_build_the_same_classes(small_overrides):
    model = build_model("r101-detr", num_classes=4, num_predicates=3, overrides=small_overrides)
    assert isinstance(model, IterativeSG)
    assert len(model.transformer.decoder.subject_layers) == 3
    assert model.subject_query_embed.weight.shape == (8, 32)
    assert model.class_embed.out_features == 5 and model.rel_class_embed.out_features == 4
    backbone = model.backbone
    assert [len(getattr(backbone, s)) for s in ("res2", "res3", "res4", "res5")] == [1, 1, 1, 1]
    assert backbone.out_channels == 16 * 32
    assert all(p.requires_grad for p in model.parameters())  # small = trained from scratch, nothing frozen
    with torch.no_grad():
        out = model.eval()([torch.zeros(3, 40, 56, dtype=torch.uint8)])
    assert out["pred_sub_logits"].shape == (1, 8, 5) and len(out["aux_outputs"]) == 2


@pytest.mark.parametrize(("overrides", "message"), [
    ({"layers": 2}, "unknown key"),
    ({"nheads": 3}, "divisible"),
    ({"num_queries": 0}, "positive"),
    ({"backbone": {"depth": 34}}, "depth"),
    ({"backbone": {"blocks": [1, 1]}}, "4 positive"),
    ({"backbone": {"colour": 1}}, "unknown key"),
    ({"backbone": {"norm": "SyncBN"}}, "backbone.norm"),
])
def test_bad_overrides_are_user_errors(overrides, message):
    with pytest.raises(UserError, match=message):
        build_model("r101-detr", overrides=overrides)


def test_resnet_overrides_change_depth_width_and_statistics():
    r50 = build_resnet(resnet_config({"depth": 50, "width": 8, "pixel_stats": "detectron2"}))
    assert [len(getattr(r50, s)) for s in ("res2", "res3", "res4", "res5")] == [3, 4, 6, 3]
    assert r50.out_channels == 256 and r50.res3[0].conv2.out_channels == 16
    assert r50.input_format == "BGR" and r50.pixel_mean == [103.53, 116.28, 123.675]
    assert r50.pixel_std == [1, 1, 1]
    with pytest.raises(UserError, match="pixel_stats"):
        resnet_config({"pixel_stats": "caffe"})


def test_registry_names_the_seven_variants_their_p5_and_speaq_versions_and_egtr():
    published = ["r101-detr", "vovnet39-detr", "vovnet57-detr", "vovnet99-detr",
                 "vovnet39-centermask", "vovnet57-centermask", "vovnet99-centermask"]
    isg = [*published, *(f"{name}-p5" for name in published[1:])]
    assert list(VARIANTS) == [*isg, *(f"{name}-speaq" for name in isg), "r101-detr-speaq-baseline", "egtr-r50"]
    assert VARIANTS["egtr-r50"].method == "egtr" and VARIANTS["egtr-r50"].aux_head is None
    assert VARIANTS["r101-detr-speaq-baseline"].method == "iterativesg"
    assert {VARIANTS[name].method for name in isg} == {"iterativesg"}
    assert VARIANTS["vovnet57-centermask-speaq"].method == "speaq"
    assert VARIANTS["vovnet57-centermask-speaq"].aux_head == "centermask"
    with pytest.raises(UserError, match="unknown variant"):
        build_model("r50-detr")


def test_count_params_cli_prints_json(capsys):
    assert main(["count-params", "r101-detr"]) == 0
    assert json.loads(capsys.readouterr().out) == {"backbone": R101_BACKBONE, "total": R101_TOTAL,
                                                   "trainable": 93_029_070}
    assert main(["count-params", "r101-detr", "--overrides", '{"dec_layers": "x"}']) == 2
    assert "dec_layers" in capsys.readouterr().err


def test_count_params_cli_reads_overrides_from_params(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("model:\n  overrides: {hidden_dim: 32, nheads: 4, enc_layers: 1, dec_layers: 1, "
                      "dim_feedforward: 32, num_queries: 4, backbone: {small: true}}\n")
    assert main(["count-params", "r101-detr", "--params", str(params)]) == 0
    counts = json.loads(capsys.readouterr().out)
    expected = count_parameters(build_model("r101-detr", overrides={
        "hidden_dim": 32, "nheads": 4, "enc_layers": 1, "dec_layers": 1, "dim_feedforward": 32,
        "num_queries": 4, "backbone": {"small": True}}))
    assert counts == expected
