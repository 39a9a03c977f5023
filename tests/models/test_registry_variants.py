"""The VoVNet variants built through the registry: published totals and the CenterMask hook end to end."""

from __future__ import annotations

import pytest
import torch

from itersg.errors import UserError
from itersg.models import build_model, count_parameters
from itersg.models.losses.build import build_criterion
from itersg.models.postprocess import postprocess_scene_graphs


@pytest.mark.parametrize(("variant", "backbone", "total"), [
    ("vovnet39-detr", 28_704_704, 79_102_606),
    ("vovnet39-centermask", 28_704_704, 103_168_224),
])
def test_published_parameter_totals(variant, backbone, total):
    counts = count_parameters(build_model(variant))
    assert (counts["backbone"], counts["total"]) == (backbone, total)


def test_vovnet_detr_part_differs_from_r101_only_in_the_input_projection():
    model = build_model("vovnet39-detr")
    assert model.input_proj.in_channels == 256 and model.aux_head is None
    rest = count_parameters(model)["total"] - count_parameters(model)["backbone"]
    assert rest == 50_856_654 - (2048 * 256 - 256 * 256)


def test_transformer_level_selects_the_fpn_level():
    assert build_model("vovnet39-detr", transformer_level="P7").backbone.out_feature == "P7"
    with pytest.raises(UserError, match="transformer_level"):
        build_model("vovnet39-detr", transformer_level="P9")


def test_centermask_variant_trains_and_predicts(small_overrides, scenes):
    torch.manual_seed(0)
    overrides = {**small_overrides, "aux_head": {"small": True}}
    model = build_model("vovnet39-centermask", num_classes=4, num_predicates=4, overrides=overrides)
    criterion = build_criterion(model)
    images, targets = zip(*scenes(2, size=64))
    out = model(list(images))
    assert "aux_head" in out
    losses = criterion(out, list(targets))
    aux_names = [k for k in losses if k.startswith("loss_fcos")]
    assert aux_names and all(criterion.weight_dict[k] == 1.0 for k in aux_names)
    total = criterion.weighted_total(losses)
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        outputs = model([images[0]])
    (prediction,) = postprocess_scene_graphs(outputs, [targets[0]["size"]], [targets[0]["orig_size"]])
    assert prediction["rel_scores"].shape[1] == 5
