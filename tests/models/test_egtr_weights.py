"""EGTR checkpoints: the official names (a Lightning .ckpt of DetrForSceneGraphGeneration) load into the
whole model with nothing missing or unexpected, a Deformable DETR checkpoint starts EGTR with a fresh
relation head, and count-params prints the official totals."""

from __future__ import annotations

import json

import pytest
import torch

from itersg.cli import main
from itersg.errors import UserError
from itersg.models import build_model
from itersg.models.weights.checkpoint_keys import load_weights
from itersg.models.weights.egtr_keys import detector_to_official

SMALL = {"hidden_dim": 64, "nheads": 4, "enc_layers": 1, "dec_layers": 2, "dim_feedforward": 128,
         "num_queries": 6, "dropout": 0.0, "backbone": {"small": True}}


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("egtr-r50", num_classes=5, num_predicates=3, overrides=SMALL).eval()
    with torch.no_grad():  # the frozen tables as the training split's statistics would fill them
        model.relation.triplet_dist.normal_()
    return model


def _official_ckpt(model: torch.nn.Module, path, detector_only: bool = False) -> None:
    """The state dict under the reference's names, wrapped as its Lightning module saves it."""
    detector = {k.removeprefix("detector."): v for k, v in model.state_dict().items() if k.startswith("detector.")}
    official = detector_to_official(detector, decoder_layers=SMALL["dec_layers"])
    if not detector_only:
        official |= {k.removeprefix("relation."): v for k, v in model.state_dict().items() if k.startswith("relation.")}
    assert "class_embed.1.weight" in official and "model.level_embed" in official
    torch.save({"state_dict": {f"model.{k}": v for k, v in official.items()}, "epoch": 3}, path)


def test_an_official_egtr_checkpoint_loads_whole_and_predicts_the_same(tmp_path):
    source, target = _model(0), _model(1)
    _official_ckpt(source, tmp_path / "egtr.ckpt")
    report = load_weights(target, tmp_path / "egtr.ckpt")
    assert report.initialised == () and report.ignored == ()
    images = [torch.randint(0, 255, (3, 64, 80), dtype=torch.uint8).float()]
    with torch.no_grad():
        expected, got = source(images), target(images)
    for key in ("pred_logits", "pred_boxes", "pred_rel", "pred_connectivity"):
        assert torch.equal(expected[key], got[key]), key


def test_a_deformable_detr_checkpoint_starts_egtr_with_a_new_relation_head(tmp_path):
    source, target = _model(0), _model(1)
    head = {k: v.clone() for k, v in target.relation.state_dict().items()}
    _official_ckpt(source, tmp_path / "detr.ckpt", detector_only=True)
    report = load_weights(target, tmp_path / "detr.ckpt")
    assert report.initialised == ("relation",)
    assert all(torch.equal(v, target.relation.state_dict()[k]) for k, v in head.items())
    assert torch.equal(source.detector.class_embed.weight, target.detector.class_embed.weight)


def test_a_checkpoint_of_another_size_is_refused_with_the_keys(tmp_path):
    _official_ckpt(_model(0), tmp_path / "egtr.ckpt")
    other = build_model("egtr-r50", num_classes=5, num_predicates=4, overrides=SMALL)
    with pytest.raises(UserError, match=r"shape mismatches 4 \(e.g. relation.rel_dist: file \(3,\), model \(4,\)"):
        load_weights(other, tmp_path / "egtr.ckpt")


def test_count_params_prints_the_official_totals(capsys):
    assert main(["count-params", "egtr-r50"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "backbone": 23_462_592, "total": 42_510_356, "trainable": 41_147_344,
        "relation_additions": 1_328_948, "frequency_table": 1_140_100}
