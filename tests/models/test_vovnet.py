"""VoVNetV2-FPN backbones: exact parameter counts, interface, overrides, timm and centermask2 weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from timm.models.vovnet import VovNet, model_cfgs
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from itersg.errors import UserError
from itersg.models.backbones.vovnet import PIXEL_STATS, SMALL_OVERRIDES, build_vovnet_fpn
from itersg.models.weights.vovnet_weights import (
    detectron2_key_map,
    load_detectron2_weights,
    load_timm_vovnet_weights,
    to_detectron2_state_dict,
)

# etri-iterativeSG "T.P." minus the DETR part (50,397,902)
PUBLISHED_BACKBONE_FPN = {39: 28_704_704, 57: 44_964_288, 99: 73_010_368}
FPN_PARAMETERS = 3_540_992

# Names and shapes read off centermask2's vovnet.py (conv3x3/conv1x1 name their layers
# "{module}_{postfix}/conv" and "/norm", eSEModule has "fc") and detectron2's FPN / LastLevelP6P7.
REFERENCE_VOVNET39 = [
    ("backbone.bottom_up.stem.stem_1/conv.weight", (64, 3, 3, 3)),
    ("backbone.bottom_up.stem.stem_2/norm.running_mean", (64,)),
    ("backbone.bottom_up.stem.stem_3/conv.weight", (128, 64, 3, 3)),
    ("backbone.bottom_up.stage2.OSA2_1.layers.0.OSA2_1_0/conv.weight", (128, 128, 3, 3)),
    ("backbone.bottom_up.stage2.OSA2_1.layers.4.OSA2_1_4/norm.weight", (128,)),
    ("backbone.bottom_up.stage2.OSA2_1.concat.OSA2_1_concat/conv.weight", (256, 128 + 5 * 128, 1, 1)),
    ("backbone.bottom_up.stage2.OSA2_1.ese.fc.weight", (256, 256, 1, 1)),
    ("backbone.bottom_up.stage3.OSA3_1.layers.0.OSA3_1_0/conv.weight", (160, 256, 3, 3)),
    ("backbone.bottom_up.stage3.OSA3_1.concat.OSA3_1_concat/norm.running_var", (512,)),
    ("backbone.bottom_up.stage4.OSA4_1.ese.fc.bias", (768,)),
    ("backbone.bottom_up.stage4.OSA4_2.layers.0.OSA4_2_0/conv.weight", (192, 768, 3, 3)),
    ("backbone.bottom_up.stage5.OSA5_2.concat.OSA5_2_concat/conv.weight", (1024, 1024 + 5 * 224, 1, 1)),
    ("backbone.fpn_lateral3.weight", (256, 512, 1, 1)),
    ("backbone.fpn_lateral5.bias", (256,)),
    ("backbone.fpn_output4.weight", (256, 256, 3, 3)),
    ("backbone.top_block.p6.weight", (256, 256, 3, 3)),
    ("backbone.top_block.p7.bias", (256,)),
]


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _randomise(module: nn.Module, seed: int = 0) -> None:
    """Distinct values in every parameter and buffer (variances positive)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            values = torch.rand(tensor.shape, generator=g) + 0.5
            tensor.copy_(values if name.endswith("running_var") else values - 1.0)


@pytest.fixture(scope="module")
def vovnet39():
    return build_vovnet_fpn(39)


@pytest.mark.parametrize("depth", [39, 57, 99])
def test_backbone_fpn_parameter_counts_match_published(depth):
    backbone = build_vovnet_fpn(depth)
    assert _count(backbone) == PUBLISHED_BACKBONE_FPN[depth]
    assert _count(backbone.fpn) == FPN_PARAMETERS
    published_detr_total = {39: 79_102_606, 57: 95_362_190, 99: 123_408_270}[depth]
    assert PUBLISHED_BACKBONE_FPN[depth] + 50_397_902 == published_detr_total


def test_every_osa_block_has_ese_and_every_norm_is_frozen(vovnet39):
    blocks = [block for stage in vovnet39.body.stages for block in stage.blocks]
    assert len(blocks) == 1 + 1 + 2 + 2
    assert all(block.attn is not None for block in blocks)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in vovnet39.modules())
    norms = [m for m in vovnet39.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(norms) == 3 + 6 * (5 + 1)
    assert all(not list(norm.parameters()) for norm in norms)
    # the eSE layers timm's ese_vovnet39b lacks: first block of stages 4 and 5
    assert set(vovnet39.body.added_ese_keys) == {f"stages.{s}.blocks.0.attn.fc.{p}" for s in (2, 3)
                                                for p in ("weight", "bias")}


def test_freeze_at(vovnet39):
    """Default 0 as the ETRI runs (FREEZE_AT 0): everything trains; 1 freezes the stem's three convs."""
    assert all(p.requires_grad for p in vovnet39.parameters())
    stem_frozen = build_vovnet_fpn(39, overrides={"freeze_at": 1})
    frozen = {name: p.numel() for name, p in stem_frozen.named_parameters() if not p.requires_grad}
    assert set(frozen) == {name for name, _ in stem_frozen.named_parameters() if name.startswith("body.stem.")}
    assert sum(frozen.values()) == 112_320
    deeper = build_vovnet_fpn(39, overrides={"small": True, "freeze_at": 2})
    assert not any(p.requires_grad for p in deeper.body.stages[0].parameters())
    assert all(p.requires_grad for p in deeper.body.stages[1].parameters())


def test_interface_attributes(vovnet39):
    assert vovnet39.out_feature == "P5" and vovnet39.out_stride == 32
    assert vovnet39.out_channels == 256
    assert vovnet39.size_divisibility == 32
    assert (vovnet39.pixel_mean, vovnet39.pixel_std, vovnet39.input_format) == (
        [103.530, 116.280, 123.675], [1.0, 1.0, 1.0], "BGR")
    p7 = build_vovnet_fpn(39, out_level="P7", overrides={"small": True})
    assert (p7.out_feature, p7.out_stride, p7.size_divisibility) == ("P7", 128, 128)


@pytest.mark.parametrize(("depth", "stats"), [(39, "timm-imagenet"), (57, "timm-inception")])
def test_timm_pixel_statistics_follow_the_depth(depth, stats):
    backbone = build_vovnet_fpn(depth, overrides={"small": True, "pixel_stats": "timm"})
    mean, std, input_format = PIXEL_STATS[stats]
    assert (backbone.pixel_mean, backbone.pixel_std, backbone.input_format) == (mean, std, input_format)


def test_small_override_forward_backward():
    torch.manual_seed(0)
    backbone = build_vovnet_fpn(57, overrides={"small": True})
    assert backbone.out_channels == SMALL_OVERRIDES["fpn_channels"]
    assert _count(backbone) < 1_000_000
    out = backbone(torch.randn(2, 3, 64, 96))
    assert [tuple(f.shape) for f in out.values()] == [(2, 64, 8, 12), (2, 64, 4, 6), (2, 64, 2, 3),
                                                      (2, 64, 1, 2), (2, 64, 1, 1)]
    sum(f.square().mean() for f in out.values()).backward()
    grads = {name: p.grad for name, p in backbone.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["body.stem.0.conv.weight"].abs().sum() > 0


def test_full_size_vovnet39_forward_on_a_small_image(vovnet39):
    with torch.no_grad():
        out = vovnet39(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "P3": (1, 256, 8, 8), "P4": (1, 256, 4, 4), "P5": (1, 256, 2, 2), "P6": (1, 256, 1, 1),
        "P7": (1, 256, 1, 1)}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"depth": 50}, "depth"),
    ({"out_level": "P8"}, "transformer_level"),
    ({"overrides": {"width": 16}}, "unknown key"),
    ({"overrides": {"stage_channels": [16, 16]}}, "stage_channels"),
    ({"overrides": {"layers_per_block": 0}}, "layers_per_block"),
    ({"overrides": {"pixel_stats": "caffe"}}, "pixel_stats"),
    ({"overrides": {"norm": "GN"}}, "backbone.norm"),
    ({"depth": 99, "overrides": {"pixel_stats": "timm"}}, "timm has no VoVNet-99"),
])
def test_bad_configuration_raises_user_error(kwargs, message):
    kwargs = {"depth": 39, **kwargs}
    with pytest.raises(UserError, match=message):
        build_vovnet_fpn(kwargs.pop("depth"), **kwargs)


def test_reference_key_names_and_shapes(vovnet39):
    reference = to_detectron2_state_dict(vovnet39)
    for name, shape in REFERENCE_VOVNET39:
        assert tuple(reference[name].shape) == shape, name
    # stem 3 x (conv + 4 norm tensors), 6 blocks x (5 x 5 + concat 5 + eSE 2), FPN 6 x 2 + top block 4
    assert len(reference) == 15 + 6 * 32 + 16


def test_detectron2_round_trip_puts_every_tensor_back(tmp_path):
    centermask2_layout = {"small": True, "norm": "FrozenBN", "pixel_stats": "detectron2"}  # as centermask2 trains
    source = build_vovnet_fpn(57, overrides=centermask2_layout)
    _randomise(source)
    path = tmp_path / "centermask2.pth"
    torch.save({"model": to_detectron2_state_dict(source), "__author__": "test"}, path)
    target = build_vovnet_fpn(57, overrides=centermask2_layout)
    report = load_detectron2_weights(target, path)
    assert report.kept_init == [] and report.ignored == [] and report.warnings == []
    assert len(report.loaded) == len(source.state_dict())
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name


def test_detectron2_names_land_in_the_right_modules(tmp_path):
    model = build_vovnet_fpn(39, overrides={"small": True})
    reference = {name: torch.zeros_like(t) for name, t in to_detectron2_state_dict(model).items()}
    body, fpn = model.body, model.fpn
    expected_homes = {
        "backbone.bottom_up.stem.stem_3/conv.weight": lambda: body.stem[2].conv.weight,
        "backbone.bottom_up.stage4.OSA4_2.layers.1.OSA4_2_1/norm.bias": lambda: body.stages[2].blocks[1]
        .conv_mid[1].bn.bias,
        "backbone.bottom_up.stage3.OSA3_1.concat.OSA3_1_concat/norm.running_mean": lambda: body.stages[1]
        .blocks[0].conv_concat.bn.running_mean,
        "backbone.bottom_up.stage5.OSA5_1.ese.fc.weight": lambda: body.stages[3].blocks[0].attn.fc.weight,
        "backbone.fpn_lateral4.weight": lambda: fpn.lateral_convs[1].weight,
        "backbone.fpn_output3.bias": lambda: fpn.output_convs[0].bias,
        "backbone.top_block.p7.weight": lambda: fpn.top_block.p7.weight,
    }
    for index, name in enumerate(expected_homes):
        reference[name] = torch.full_like(reference[name], float(index + 7))
    torch.save({"model": reference}, tmp_path / "marked.pth")
    load_detectron2_weights(model, tmp_path / "marked.pth")
    for index, (name, home) in enumerate(expected_homes.items()):
        assert torch.all(home() == index + 7), name
    marked = sum(t.numel() for n, t in reference.items() if n in expected_homes)
    assert sum(int((t != 0).sum()) for t in model.state_dict().values()) == marked


def test_bare_imagenet_layout_loads_the_body_only(tmp_path):
    source = build_vovnet_fpn(39, overrides={"small": True})
    _randomise(source)
    prefix = "backbone.bottom_up."
    bare = {name.removeprefix(prefix): tensor
            for name, tensor in to_detectron2_state_dict(source).items() if name.startswith(prefix)}
    torch.save(bare, tmp_path / "vovnet39_ese_detectron2.pth")
    target = build_vovnet_fpn(39, overrides={"small": True})
    fpn_before = {k: v.clone() for k, v in target.fpn.state_dict().items()}
    report = load_detectron2_weights(target, tmp_path / "vovnet39_ese_detectron2.pth")
    assert all(name.startswith("backbone.fpn.") for name in report.kept_init)
    assert len(report.kept_init) == len(fpn_before)
    for name, tensor in source.body.state_dict().items():
        assert torch.equal(target.body.state_dict()[name], tensor)
    for name, tensor in fpn_before.items():
        assert torch.equal(target.fpn.state_dict()[name], tensor)


def test_detectron2_problems_are_reported_and_nothing_changes(tmp_path):
    model = build_vovnet_fpn(39, overrides={"small": True})
    reference = to_detectron2_state_dict(model)
    missing = {k: v for k, v in reference.items() if "OSA3_1_concat" not in k}
    extra = {**reference, "backbone.bottom_up.stage6.OSA6_1.ese.fc.weight": torch.zeros(1)}
    wrong = {**reference, "backbone.fpn_lateral3.weight": torch.zeros(3, 3, 1, 1)}
    for label, state, message in [("missing", missing, "missing keys 5"), ("extra", extra, "unexpected keys 1"),
                                  ("wrong", wrong, "shape mismatches 1")]:
        torch.save({"model": state}, tmp_path / f"{label}.pth")
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(UserError, match=message):
            load_detectron2_weights(model, tmp_path / f"{label}.pth")
        assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_unreadable_weight_files_raise_user_error(tmp_path):
    model = build_vovnet_fpn(39, overrides={"small": True})
    with pytest.raises(UserError, match="does not exist"):
        load_detectron2_weights(model, tmp_path / "absent.pth")
    (tmp_path / "page.pth").write_text("<html>Dropbox</html>")
    with pytest.raises(UserError, match="cannot read"):
        load_detectron2_weights(model, tmp_path / "page.pth")
    torch.save({"model": {"a": [1, 2]}}, tmp_path / "lists.pth")
    with pytest.raises(UserError, match="state dict of tensors"):
        load_timm_vovnet_weights(model, tmp_path / "lists.pth")


def test_key_map_is_one_to_one(vovnet39):
    mapping = detectron2_key_map(vovnet39)
    assert len(mapping) == len(vovnet39.state_dict())
    assert sorted(mapping.values()) == sorted(f"backbone.{k}" for k in vovnet39.state_dict())


# timm ------------------------------------------------------------------------------------------

SMALL_TIMM_CONFIG = {"stem_chs": [16, 16, 32], "stage_conv_chs": [16, 24, 32, 40],
                     "stage_out_chs": [32, 64, 96, 128], "layer_per_block": 2,
                     "block_per_stage": [1, 1, 2, 2]}


def _timm_reference_model() -> VovNet:
    """timm's own ese_vovnet39b class (BatchNorm, eSE on the last block of each stage), small widths."""
    model = VovNet(cfg=dict(model_cfgs["ese_vovnet39b"], **SMALL_TIMM_CONFIG), num_classes=7)
    _randomise(model, seed=3)
    return model.eval()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_weights_load_and_reproduce_timm_features(tmp_path, suffix):
    reference = _timm_reference_model()
    state = reference.state_dict()
    assert any(k.endswith("num_batches_tracked") for k in state) and "head.fc.weight" in state
    path = tmp_path / f"ese_vovnet39b{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    backbone = build_vovnet_fpn(39, overrides={"small": True, "pixel_stats": "detectron2"}).eval()
    report = load_timm_vovnet_weights(backbone, path)
    assert sorted(report.kept_init) == sorted(
        [f"backbone.body.{k}" for k in backbone.body.added_ese_keys]
        + [f"backbone.fpn.{k}" for k in backbone.fpn.state_dict()])
    assert "head.fc.weight" in report.ignored
    assert "pixel_stats" in report.summary()  # built with the detectron2 statistics, loaded timm weights
    timm_normalised = build_vovnet_fpn(39, overrides={"small": True, "pixel_stats": "timm"})
    assert load_timm_vovnet_weights(timm_normalised, path).warnings == []
    for name, tensor in backbone.body.state_dict().items():
        if name not in backbone.body.added_ese_keys:
            assert torch.equal(tensor, state[name]), name
    # with the added eSE gates opened (hard-sigmoid(3) = 1) the body computes what timm computes
    with torch.no_grad():
        for name in backbone.body.added_ese_keys:
            backbone.body.get_parameter(name).fill_(3.0 if name.endswith("bias") else 0.0)
        x = torch.randn(1, 3, 64, 64)
        ours = backbone.body.stages(backbone.body.stem(x))
        assert torch.allclose(ours, reference.forward_features(x), atol=1e-5, rtol=1e-4)


def test_timm_weights_missing_a_layer_raise(tmp_path):
    state = _timm_reference_model().state_dict()
    del state["stages.1.blocks.0.conv_mid.0.conv.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(UserError, match="missing keys 1"):
        load_timm_vovnet_weights(build_vovnet_fpn(39, overrides={"small": True}), tmp_path / "broken.pth")


def test_small_preset_trains_its_norms_and_keeps_features_at_unit_scale():
    """From scratch, identity FrozenBN on 0-255 pixels makes P3 ~100x larger at init (3e4 after training);
    the small preset's trained BN keeps it near 1."""
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64) * 255
    scales = {}
    old_preset = {"norm": "FrozenBN", "pixel_stats": "detectron2"}  # the small preset before it trained its norms
    for name, extra in (("small", {}), ("old", old_preset)):
        backbone = build_vovnet_fpn(39, overrides={"small": True, **extra}).train()
        trained = any(p.requires_grad for n, p in backbone.body.named_parameters() if ".bn." in n)
        assert trained == (name == "small")
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (backbone.pixel_mean, backbone.pixel_std))
        scales[name] = backbone((images - mean) / std)["P3"].abs().mean().item()
    assert scales["small"] < 10 < scales["old"]


def test_bn_counters_load_whether_or_not_the_file_has_them(tmp_path):
    """A centermask2 file (FrozenBN, no counters) loads into a BN backbone and back."""
    frozen = build_vovnet_fpn(39, overrides={"small": True, "norm": "FrozenBN"})
    _randomise(frozen)
    torch.save({"model": to_detectron2_state_dict(frozen)}, tmp_path / "frozen.pth")
    trained = build_vovnet_fpn(39, overrides={"small": True, "norm": "BN"})
    report = load_detectron2_weights(trained, tmp_path / "frozen.pth")
    assert report.kept_init == [] and not any(k.endswith("num_batches_tracked") for k in report.loaded)
    assert torch.equal(trained.body.stem[0].bn.running_var, frozen.body.stem[0].bn.running_var)

