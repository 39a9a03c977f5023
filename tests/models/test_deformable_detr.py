"""EGTR's Deformable DETR: deformable sampling against a direct implementation, the official parameter counts,
the official checkpoint names, the output contract and where gradients flow."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from itersg.errors import UserError
from itersg.models.detectors.deformable_detr import (
    DeformableDETR,
    DeformableDetrConfig,
    build_deformable_detr,
    sine_position_embedding,
)
from itersg.models.layers.ms_deform_attn import MultiscaleDeformableAttention, ms_deform_attn_core
from itersg.models.weights.egtr_keys import detector_to_official, load_egtr_detector

SMALL = DeformableDetrConfig(d_model=64, encoder_layers=1, decoder_layers=2, num_heads=4, ffn_dim=64,
                             num_queries=10, num_classes=5)


def images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3, 64, 96), generator=g, dtype=torch.uint8),
            torch.randint(0, 256, (3, 48, 80), generator=g, dtype=torch.uint8)]


def small_model(seed: int = 0) -> DeformableDETR:
    torch.manual_seed(seed)
    return DeformableDETR(config=SMALL)


# --- Deformable attention -----------------------------------------------------------------------------------


def bilinear_at(plane: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """plane [H, W, D] sampled at (x, y) in pixels, pixel (i, j)'s centre at (j, i); zero outside."""
    height, width = plane.shape[:2]
    x0, y0 = math.floor(x), math.floor(y)
    total = torch.zeros(plane.shape[-1], dtype=plane.dtype)
    for row, col in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
        weight = (1 - abs(x - col)) * (1 - abs(y - row))
        if 0 <= row < height and 0 <= col < width:
            total += weight * plane[row, col]
    return total


def slow_ms_deform_attn(value, shapes, locations, weights) -> torch.Tensor:
    """Explicit loops over batch, queries, heads, levels and points."""
    batch, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = locations.shape
    starts = [sum(h * w for h, w in shapes[:level]) for level in range(levels)]
    out = torch.zeros(batch, queries, heads, dim, dtype=value.dtype)
    for b in range(batch):
        for q in range(queries):
            for m in range(heads):
                for level, (h, w) in enumerate(shapes):
                    plane = value[b, starts[level]:starts[level] + h * w, m].reshape(h, w, dim)
                    for p in range(points):
                        x, y = locations[b, q, m, level, p].tolist()
                        sample = bilinear_at(plane, x * w - 0.5, y * h - 0.5)
                        out[b, q, m] += weights[b, q, m, level, p] * sample
    return out.flatten(2)


def test_grid_sample_attention_equals_the_direct_implementation():
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (2, 5), (1, 1)]
    batch, queries, heads, dim, points = 2, 3, 2, 3, 4
    value = torch.randn(batch, sum(h * w for h, w in shapes), heads, dim, generator=g, dtype=torch.float64)
    # points well outside the map ([-0.4, 1.4]) read zeros; some sit exactly on pixel centres and borders
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=g, dtype=torch.float64)
    locations = locations * 1.8 - 0.4
    locations[0, 0, 0, 0, 0] = torch.tensor([0.5 / 4, 1.5 / 3])  # the centre of pixel (1, 0) of level 0
    locations[0, 0, 0, 0, 1] = torch.tensor([0.0, 1.0])
    locations[1, 2, 1, 1, 2] = torch.tensor([-0.6, 0.5])
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=g, dtype=torch.float64)
    expected = slow_ms_deform_attn(value, shapes, locations, weights)
    assert torch.allclose(ms_deform_attn_core(value, shapes, locations, weights), expected, rtol=0, atol=1e-12)
    as_tensor = ms_deform_attn_core(value, torch.tensor(shapes), locations, weights)
    assert torch.allclose(as_tensor, expected, rtol=0, atol=1e-12)
    # a single point on a pixel centre reads that pixel
    one = torch.zeros_like(weights)
    one[0, 0, 0, 0, 0] = 1
    assert torch.allclose(ms_deform_attn_core(value, shapes, locations, one)[0, 0, :dim], value[0, 4, 0])


def test_deformable_attention_starts_as_the_official_initialisation():
    attention = MultiscaleDeformableAttention(embed_dim=32, num_heads=8, n_levels=2, n_points=3)
    offsets = attention.sampling_offsets.bias.detach().view(8, 2, 3, 2)
    assert torch.equal(offsets[:, 0], offsets[:, 1])  # the same on every level
    assert torch.allclose(offsets[0, 0], torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]))  # head 0: +x
    assert torch.allclose(offsets[1, 0, 1], torch.tensor([2.0, 2.0]))  # head 1: 45 degrees, on the square
    assert torch.allclose(offsets[6, 0, 2], torch.tensor([0.0, -3.0]), atol=1e-6)
    for linear in (attention.sampling_offsets, attention.attention_weights):
        assert not linear.weight.any()
    assert not attention.attention_weights.bias.any() and not attention.value_proj.bias.any()


# --- Parameter counts (measured from the official code) ----------------------------------------------------


@pytest.fixture(scope="module")
def full_model() -> DeformableDETR:
    torch.manual_seed(0)
    return build_deformable_detr()


def count(module: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def test_parameter_counts_are_the_official_ones(full_model):
    assert count(full_model.backbone) == 23_462_592
    assert count(full_model.backbone, trainable=True) == 23_239_680
    heads = count(full_model.class_embed) + count(full_model.bbox_embed)
    assert count(full_model) - heads == 39_870_146
    assert count(full_model.class_embed) == 38_550
    assert count(full_model.bbox_embed) == 132_612
    assert count(full_model) == 40_041_308


def test_backbone_freezes_as_the_official_code(full_model):
    body = full_model.backbone.body
    # replace_batch_norm walks dir(), which skips names starting with a digit: the shortcut norms stay BN
    plain = sorted(name for name, m in body.named_modules() if isinstance(m, nn.BatchNorm2d))
    assert plain == [f"layer{i}.0.downsample.1" for i in range(1, 5)]
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in body.modules()) == 49
    assert all(m.eps == 1e-5 for m in body.modules() if isinstance(m, FrozenBatchNorm2d))
    assert not any(p.requires_grad for m in (body.conv1, body.layer1) for p in m.parameters())
    assert all(p.requires_grad for m in (body.layer2, body.layer3, body.layer4) for p in m.parameters())
    assert full_model.backbone.feature_channels == (512, 1024, 2048)
    assert full_model.backbone.pixel_mean == pytest.approx([123.675, 116.28, 103.53])
    assert full_model.backbone.pixel_std == pytest.approx([58.395, 57.12, 57.375])
    assert full_model.class_embed.bias.detach() == pytest.approx(torch.full((150,), -math.log(99)))


# --- Official checkpoint names -----------------------------------------------------------------------------

# Names read in naver-ai/egtr model/deformable_detr.py and model/egtr.py (DetrForSceneGraphGeneration).
OFFICIAL_NAMES = (
    "model.backbone.conv_encoder.model.conv1.weight",
    "model.backbone.conv_encoder.model.bn1.running_var",
    "model.backbone.conv_encoder.model.layer2.0.conv1.weight",
    "model.backbone.conv_encoder.model.layer3.0.downsample.1.num_batches_tracked",
    "model.input_proj.0.0.weight",
    "model.input_proj.3.1.bias",
    "model.encoder.layers.0.self_attn.sampling_offsets.weight",
    "model.encoder.layers.0.self_attn.attention_weights.bias",
    "model.encoder.layers.0.self_attn_layer_norm.weight",
    "model.encoder.layers.0.fc1.weight",
    "model.encoder.layers.0.final_layer_norm.bias",
    "model.decoder.layers.0.self_attn.q_proj.weight",
    "model.decoder.layers.1.self_attn.out_proj.bias",
    "model.decoder.layers.1.encoder_attn.value_proj.weight",
    "model.decoder.layers.1.encoder_attn_layer_norm.weight",
    "model.query_position_embeddings.weight",
    "model.level_embed",
    "model.reference_points.weight",
    "class_embed.0.weight",
    "class_embed.1.bias",
    "bbox_embed.1.layers.2.weight",
)


def official_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights perturbed (so that zero-initialised layers matter), under the official names."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return detector_to_official(model.state_dict(), SMALL.decoder_layers)


def test_official_names_load_completely_and_give_the_same_outputs(tmp_path):
    source = small_model(0).eval()
    state = official_state(source)
    assert set(OFFICIAL_NAMES) <= set(state)
    assert torch.equal(state["class_embed.0.weight"], state["class_embed.1.weight"])
    # a Lightning checkpoint of EGTR: one more "model." and the relation head, which is not the detector's
    lightning = {"model." + k: v for k, v in state.items()}
    lightning["model.proj_q.0.weight"] = torch.zeros(64, 64)
    torch.save({"state_dict": lightning, "epoch": 3}, tmp_path / "egtr.ckpt")
    target = small_model(1).eval()
    report = load_egtr_detector(target, tmp_path / "egtr.ckpt")
    assert report.ignored == ("proj_q.0.weight",)
    with torch.no_grad():
        before, after = source(images()), target(images())
    for key in ("pred_logits", "pred_boxes", "last_hidden_state", "decoder_queries", "decoder_keys"):
        assert torch.equal(before[key], after[key]), key


@pytest.mark.parametrize("change, problem", [
    (lambda s: s.pop("model.decoder.layers.1.fc2.weight"), "missing keys 1"),
    (lambda s: s.update({"model.decoder.layers.9.fc2.weight": torch.zeros(1)}), "unexpected keys 1"),
    (lambda s: s.update({"class_embed.1.bias": torch.zeros(5)}), "differs from class_embed.0.bias"),
])
def test_incomplete_or_inconsistent_checkpoints_are_refused(change, problem):
    state = official_state(small_model(0))
    change(state)
    with pytest.raises(UserError, match=problem):
        load_egtr_detector(small_model(1), state)


# --- Output contract -----------------------------------------------------------------------------------------


def test_outputs_and_the_decoder_queries_and_keys():
    model = small_model().eval()
    seen = {}
    model.decoder.layers[1].self_attn.register_forward_hook(lambda m, args, out: seen.update(args=args))
    with torch.no_grad():
        out = model(images())
        hidden, pos = seen["args"]
        attention = model.decoder.layers[1].self_attn
        queries = attention.q_proj(hidden + pos) * (64 // 4) ** -0.5
        keys = attention.k_proj(hidden + pos)
        logits = model.class_embed(out["last_hidden_state"])
    assert out["pred_logits"].shape == (2, 10, 5) and out["pred_boxes"].shape == (2, 10, 4)
    assert len(out["aux_outputs"]) == 1 and out["aux_outputs"][0]["pred_boxes"].shape == (2, 10, 4)
    assert out["last_hidden_state"].shape == (2, 10, 64)
    assert out["decoder_queries"].shape == out["decoder_keys"].shape == (2, 2, 10, 64)
    assert torch.allclose(out["decoder_queries"][1], queries) and torch.allclose(out["decoder_keys"][1], keys)
    assert torch.allclose(out["pred_logits"], logits)
    assert out["pred_boxes"].min() >= 0 and out["pred_boxes"].max() <= 1


def test_padding_gives_valid_ratios_and_positions_of_the_real_pixels():
    model = small_model().eval()
    with torch.no_grad():
        _, _, padding, shapes, ratios = model.encoder_inputs(images())
    assert shapes == [(8, 12), (4, 6), (2, 3), (1, 2)]
    assert torch.allclose(ratios[0], torch.ones(4, 2))
    assert torch.allclose(ratios[1, 0], torch.tensor([10 / 12, 6 / 8]))  # the 48x80 image at stride 8
    assert padding[1, :96].view(8, 12)[:6, :10].logical_not().all() and padding[1, :96].sum() == 96 - 60
    valid = torch.ones(1, 2, 5, dtype=torch.bool)
    embedding = sine_position_embedding(valid, num_feats=4)  # channel 4 = sin of the first x frequency
    expected = torch.sin((torch.arange(5) + 0.5) / (5 + 1e-6) * 2 * math.pi)
    assert torch.allclose(embedding[0, 4, 0], expected, atol=1e-6)


def test_gradients_reach_the_encoder_and_layer2_but_not_the_frozen_stem_and_layer1():
    model = small_model().train()
    for norm in model.backbone.body.modules():  # timm zero-initialises each block's last norm; weights would not
        if isinstance(norm, FrozenBatchNorm2d):
            norm.weight.fill_(1.0)
    out = model(images())
    (out["pred_logits"].sum() + out["pred_boxes"].sum() + out["decoder_queries"].sum()).backward()
    body = model.backbone.body
    assert model.encoder.layers[0].self_attn.sampling_offsets.weight.grad.abs().sum() > 0
    assert body.layer2[0].conv1.weight.grad.abs().sum() > 0
    assert body.conv1.weight.grad is None and body.layer1[0].conv1.weight.grad is None
