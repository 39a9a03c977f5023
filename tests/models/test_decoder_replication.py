"""Decoder replication: right after it, every IterativeSG decoder computes exactly the DETR decoder."""

from __future__ import annotations

import json

import pytest
import torch

from itersg.cli import main
from itersg.errors import UserError
from itersg.models import build_detr, build_model
from itersg.models.weights.checkpoint_keys import detr_to_reference, load_weights
from itersg.models.weights.replicate import replicate_decoder


@pytest.fixture
def pair(small_overrides):
    torch.manual_seed(0)
    detr = build_detr("r101-detr", num_classes=4, overrides=small_overrides).eval()
    isg = build_model("r101-detr", num_classes=4, num_predicates=3, overrides=small_overrides).eval()
    # DETR weights that differ from any initialisation, so copies are recognisable
    with torch.no_grad():
        for p in detr.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return detr, isg


def test_each_decoder_reproduces_the_detr_decoder(pair):
    detr, isg = pair
    isg.load_state_dict(replicate_decoder(detr.state_dict(), isg.state_dict()))
    src, mask = torch.randn(2, 32, 3, 4), torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[0, :, 3:] = True
    pos = detr.position_embedding(mask)
    query = detr.query_embed.weight
    with torch.no_grad():
        expected = detr.transformer(src, mask, pos, query)  # [L, B, Q, C]
        decoders = isg.transformer(src, mask, pos, isg.subject_query_embed.weight,
                                   isg.object_query_embed.weight, isg.relation_query_embed.weight)
    assert expected.shape == (3, 2, 8, 32)
    for hidden in decoders:
        assert torch.equal(hidden, expected)


def test_replicated_model_detects_like_detr(pair, scenes):
    detr, isg = pair
    isg.load_state_dict(replicate_decoder(detr.state_dict(), isg.state_dict()))
    images = [image for image, _ in scenes(2, size=64)]
    with torch.no_grad():
        expected, out = detr(images), isg(images)
    for branch in ("sub", "obj"):
        assert torch.equal(out[f"pred_{branch}_logits"], expected["pred_logits"])
        assert torch.equal(out[f"pred_{branch}_boxes"], expected["pred_boxes"])
        first_layer = out["aux_outputs"][0][f"pred_{branch}_boxes"]
        assert torch.equal(first_layer, expected["aux_outputs"][0]["pred_boxes"])


def test_replication_copies_and_keeps_what_it_should(pair):
    detr, isg = pair
    fresh = isg.state_dict()
    replicated = replicate_decoder(detr.state_dict(), fresh)
    d = detr.state_dict()
    for branch in ("subject", "object", "relation"):
        key = f"transformer.decoder.{branch}_layers.2.multihead_attn.in_proj_weight"
        assert torch.equal(replicated[key], d["transformer.decoder.layers.2.multihead_attn.in_proj_weight"])
        assert torch.equal(replicated[f"{branch}_query_embed.weight"], d["query_embed.weight"])
    for norm in ("entity_norm", "relation_norm"):
        assert torch.equal(replicated[f"transformer.decoder.{norm}.bias"], d["transformer.decoder.norm.bias"])
    assert torch.equal(replicated["class_embed.weight"], d["class_embed.weight"])
    assert torch.equal(replicated["backbone.res5.0.conv2.weight"], d["backbone.res5.0.conv2.weight"])
    fresh_keys = ("object_query_proj.0.weight", "relation_graph_proj.1.bias", "subject_graph_norm.0.weight")
    for kept in ("rel_class_embed.weight", *(f"transformer.decoder.{k}" for k in fresh_keys)):
        assert torch.equal(replicated[kept], fresh[kept])
    assert not replicated["transformer.decoder.object_query_proj.0.weight"].any()
    with pytest.raises(KeyError, match="no place"):
        replicate_decoder({"rel_class_embed.weight": torch.zeros(1)})


def test_load_weights_replicates_a_reference_detr_checkpoint(pair, tmp_path):
    detr, isg = pair
    path = tmp_path / "detr_vg.pth"
    reference = detr_to_reference(detr.state_dict())
    torch.save({"model": {**reference, "criterion.empty_weight": torch.ones(5)}, "iteration": 554399}, path)
    report = load_weights(isg, path)
    assert report.source_format == "detr-reference"
    assert report.ignored == ("criterion.empty_weight",)
    assert "rel_class_embed.weight" in report.initialised
    assert torch.equal(isg.transformer.decoder.relation_layers[0].linear2.weight,
                       detr.transformer.decoder.layers[0].linear2.weight)


def test_replicate_decoder_cli(pair, small_overrides, tmp_path, capsys):
    detr, isg = pair
    detr_path, out = tmp_path / "detr" / "model_final.pth", tmp_path / "weights" / "init.pth"
    detr_path.parent.mkdir()
    torch.save({"model": detr.state_dict(), "iteration": 10}, detr_path)
    argv = ["replicate-decoder", "--detr", str(detr_path), "--out", str(out), "--num-predicates", "3",
            "--overrides", json.dumps(small_overrides)]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    report = load_weights(isg, out)
    assert report.source_format == "iterativesg" and report.initialised == ()
    assert torch.equal(isg.object_query_embed.weight, detr.query_embed.weight)
    # an IterativeSG checkpoint is not a DETR one
    assert main(["replicate-decoder", "--detr", str(out), "--out", str(tmp_path / "x.pth")]) == 2
    assert "expected a DETR checkpoint" in capsys.readouterr().err


def test_replicating_into_a_different_size_is_a_user_error(pair, small_overrides, tmp_path):
    detr, _ = pair
    path = tmp_path / "detr.pth"
    torch.save({"model": detr.state_dict()}, path)
    overrides = {**small_overrides, "dec_layers": 2}
    other = build_model("r101-detr", num_classes=4, num_predicates=3, overrides=overrides)
    with pytest.raises(UserError, match="unexpected keys"):
        load_weights(other, path)
