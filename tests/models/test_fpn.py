"""The FCOS-style FPN: parameter counts, level strides and shapes, where P6/P7 come from."""

from __future__ import annotations

import math

import pytest
import torch

from itersg.models.backbones.fpn import FPN, LEVEL_STRIDES, LEVELS
from itersg.models.backbones.vovnet import build_vovnet_fpn

VOVNET_STAGE_CHANNELS = (512, 768, 1024)  # stages 3, 4, 5 of VoVNetV2-39/57/99


def _stage_features(batch: int, height: int, width: int, channels=(8, 12, 16)) -> list[torch.Tensor]:
    return [torch.randn(batch, c, math.ceil(height / s), math.ceil(width / s))
            for c, s in zip(channels, (8, 16, 32))]


def test_fpn_parameter_count_on_vovnet_stages():
    fpn = FPN(VOVNET_STAGE_CHANNELS, 256)
    assert sum(p.numel() for p in fpn.parameters()) == 3_540_992
    # P6 and P7 are 3x3 convs on the 256-channel P5, not on the 1024-channel C5
    assert sum(p.numel() for p in fpn.top_block.parameters()) == 2 * (256 * 256 * 9 + 256) == 1_180_160
    assert fpn.top_block.p6.in_channels == 256


def test_fpn_levels_have_strides_8_to_128():
    fpn = FPN((8, 12, 16), 24)
    out = fpn(_stage_features(2, 256, 384))
    assert list(out) == list(LEVELS)
    assert [LEVEL_STRIDES[k] for k in out] == [8, 16, 32, 64, 128]
    for name, feature in out.items():
        stride = LEVEL_STRIDES[name]
        assert feature.shape == (2, 24, 256 // stride, 384 // stride), name


def test_top_block_reads_the_p5_output():
    fpn = FPN((8, 12, 16), 24)
    seen = {}
    fpn.top_block.p6.register_forward_hook(lambda module, inputs, output: seen.update(p6_in=inputs[0]))
    out = fpn(_stage_features(1, 128, 128))
    assert torch.equal(seen["p6_in"], out["P5"])
    expected_p7 = fpn.top_block.p7(torch.relu(out["P6"]))
    assert torch.allclose(out["P7"], expected_p7)


def test_top_down_path_flows_from_coarse_to_fine_only():
    torch.manual_seed(0)
    fpn = FPN((8, 12, 16), 24).eval()
    features = _stage_features(1, 128, 128)
    base = fpn(features)
    changed_c5 = fpn([features[0], features[1], features[2] + 1.0])
    changed_c3 = fpn([features[0] + 1.0, features[1], features[2]])
    assert not torch.allclose(base["P3"], changed_c5["P3"])  # C5 reaches P3 through the top-down path
    for name in ("P4", "P5", "P6", "P7"):  # C3 reaches nothing coarser
        assert torch.equal(base[name], changed_c3[name])


@pytest.mark.parametrize("size", [(128, 256), (160, 96)])
def test_backbone_levels_match_strides(size):
    backbone = build_vovnet_fpn(39, overrides={"small": True}).eval()
    height, width = size
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, height, width))
    for name, feature in out.items():
        stride = LEVEL_STRIDES[name]
        expected = (1, backbone.out_channels, math.ceil(height / stride), math.ceil(width / stride))
        assert feature.shape == expected


def test_backbone_accepts_sizes_that_are_not_multiples_of_32():
    backbone = build_vovnet_fpn(39, overrides={"small": True}).eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 100, 70))
    assert [tuple(f.shape[-2:]) for f in out.values()][-1] == (1, 1)
    assert all(torch.isfinite(f).all() for f in out.values())
