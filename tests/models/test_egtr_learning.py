"""A small EGTR learns: it overfits a handful of synthetic scenes until R@20 >= 0.9, through the project's
registry, criterion protocol, optimizer groups and post-processing (the same code the training runs)."""

from __future__ import annotations

import pytest
import torch
from test_learning import overfit

from itersg.engine.optim import parameter_groups
from itersg.models import build_model
from itersg.models.losses.egtr_criterion import EGTRCriterion, EGTRLossConfig

SMALL_EGTR = {"hidden_dim": 64, "nheads": 4, "enc_layers": 1, "dec_layers": 2, "dim_feedforward": 128,
              "num_queries": 12, "dropout": 0.0, "backbone": {"small": True}}


def test_the_registry_builds_egtr_with_its_optimizer_groups():
    model = build_model("egtr-r50", num_classes=4, num_predicates=4, overrides=SMALL_EGTR)
    groups = {g["name"]: g for g in parameter_groups(model, lr=2e-6, lr_backbone=2e-7, lr_new=2e-4)}
    assert {g["lr"] for g in groups.values()} == {2e-6, 2e-7, 2e-4}
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith("relation.") for p in groups["new"]["params"])
    slow = [names[id(p)] for p in groups["backbone"]["params"]]
    assert any("sampling_offsets" in n for n in slow) and any(".reference_points." in n for n in slow)
    assert sum(len(g["params"]) for g in groups.values()) == sum(p.requires_grad for p in model.parameters())


@pytest.mark.slow
def test_small_egtr_overfits_synthetic_scenes(scenes):
    """With EGTR's three learning-rate groups (raised for a model that starts from nothing) and its clip 0.1;
    about 225 iterations."""
    torch.manual_seed(0)
    data = scenes(8, size=96, seed=1)
    images, targets = [image for image, _ in data], [target for _, target in data]
    model = build_model("egtr-r50", num_classes=4, num_predicates=4, overrides=SMALL_EGTR)
    criterion = EGTRCriterion(EGTRLossConfig(), num_layers=SMALL_EGTR["dec_layers"])
    optimizer = torch.optim.AdamW(parameter_groups(model, 1e-3, 1e-4, 1e-3), weight_decay=1e-4)
    start, recall, iterations = overfit(model, criterion, images, targets, optimizer=optimizer, clip=0.1)
    assert start < 0.5
    assert recall >= 0.9, f"R@20 {recall:.2f} after {iterations} iterations"
