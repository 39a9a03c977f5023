"""Normalisation, padding, padding masks and positional encodings."""

from __future__ import annotations

import pytest
import torch

from itersg.models import build_model
from itersg.models.layers.position_encoding import PositionEmbeddingSine
from itersg.models.layers.preprocess import ImageNormalizer, feature_padding_mask


def test_normaliser_normalises_pads_with_zero_and_reports_sizes():
    normaliser = ImageNormalizer([100.0, 50.0, 10.0], [2.0, 5.0, 10.0])
    images = [torch.full((3, 5, 7), 110, dtype=torch.uint8), torch.full((3, 6, 4), 20, dtype=torch.uint8)]
    batch, sizes = normaliser(images)
    assert sizes == [(5, 7), (6, 4)] and batch.shape == (2, 3, 6, 7)
    assert batch[0, :, :5, :7].flatten(1).unique(dim=1).squeeze(1).tolist() == [5.0, 12.0, 10.0]
    assert batch[1, :, :6, :4].flatten(1).unique(dim=1).squeeze(1).tolist() == [-40.0, -6.0, 1.0]
    assert not batch[0, :, 5:].any() and not batch[1, :, :, 4:].any()


def test_normaliser_flips_rgb_to_bgr_and_pads_to_a_multiple():
    normaliser = ImageNormalizer([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], "BGR", size_divisibility=32)
    image = torch.stack([torch.full((33, 10), v, dtype=torch.uint8) for v in (1, 2, 3)])
    batch, sizes = normaliser([image])
    assert batch.shape == (1, 3, 64, 32) and sizes == [(33, 10)]
    assert batch[0, :, 0, 0].tolist() == [3.0, 2.0, 1.0]


def test_feature_mask_marks_padding_with_ceil_of_the_stride():
    mask = feature_padding_mask([(64, 96), (33, 40)], (2, 2, 3), (2, 3, 64, 96), stride=32)
    assert mask.dtype == torch.bool and mask.shape == (2, 2, 3)
    assert not mask[0].any()
    assert mask[1].tolist() == [[False, False, True], [False, False, True]]  # ceil(33/32)=2, ceil(40/32)=2


@pytest.mark.parametrize("sizes", [[(64, 96), (33, 40)], [(128, 32), (96, 65)]])
def test_feature_mask_without_stride_agrees_when_the_batch_is_a_multiple(sizes):
    height, width = (max(s[d] for s in sizes) for d in (0, 1))
    height, width = -(-height // 32) * 32, -(-width // 32) * 32
    shape = (len(sizes), height // 32, width // 32)
    assert torch.equal(feature_padding_mask(sizes, shape, (2, 3, height, width)),
                       feature_padding_mask(sizes, shape, (2, 3, height, width), stride=32))


def test_sine_encoding_is_normalised_over_the_valid_region():
    encoding = PositionEmbeddingSine(8)
    unpadded = encoding(torch.zeros(1, 3, 4, dtype=torch.bool))
    mask = torch.ones(1, 5, 7, dtype=torch.bool)
    mask[:, :3, :4] = False
    padded = encoding(mask)
    assert padded.shape == (1, 16, 5, 7)
    torch.testing.assert_close(padded[..., :3, :4], unpadded)
    # channel 0 is sin(y_embed): y runs over (1/3, 2/3, 1) * 2 pi
    expected = torch.sin(torch.tensor([1 / 3, 2 / 3, 1.0]) * 2 * torch.pi)
    torch.testing.assert_close(unpadded[0, 0, :, 0], expected, atol=1e-5, rtol=0)


def test_padded_tokens_do_not_reach_the_decoders(small_overrides):
    """The encoder and the decoders see padded feature positions only through the mask."""
    torch.manual_seed(0)
    model = build_model("r101-detr", num_classes=4, num_predicates=3, overrides=small_overrides).eval()
    src = torch.randn(2, 32, 3, 4)
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[1, 2:, :] = True
    mask[1, :, 3:] = True
    pos = model.position_embedding(mask)
    queries = [getattr(model, f"{b}_query_embed").weight for b in ("subject", "object", "relation")]
    perturbed = src.clone()
    perturbed[1][:, mask[1]] = 1e3 * torch.randn(32, int(mask[1].sum()))
    with torch.no_grad():
        before = model.transformer(src, mask, pos, *queries)
        after = model.transformer(perturbed, mask, pos, *queries)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_model_masks_follow_each_image_size(small_overrides):
    torch.manual_seed(0)
    model = build_model("r101-detr", num_classes=4, num_predicates=3, overrides=small_overrides).eval()
    alone = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)]
    with torch.no_grad():
        single = model(alone)
        batched = model([*alone, torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)])
    # same-size images are not padded, so the batch does not change the first image's outputs
    torch.testing.assert_close(batched["pred_rel_logits"][:1], single["pred_rel_logits"], atol=1e-4,
                               rtol=1e-4)
