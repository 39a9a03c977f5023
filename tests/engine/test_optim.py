"""Optimizer parameter groups, the learning-rate drop, and mixed-precision settings."""

from __future__ import annotations

import pytest
import torch

from itersg.engine.optim import (
    build_lr_scheduler,
    build_optimizer,
    lr_drop_iteration,
    parameter_groups,
)
from itersg.models import build_model
from itersg.precision import Precision

TINY = {"hidden_dim": 16, "nheads": 2, "enc_layers": 1, "dec_layers": 2, "dim_feedforward": 32,
        "num_queries": 5, "backbone": {"blocks": [1, 1, 1, 1], "width": 8, "freeze_at": 2}}
TRAIN = {"lr": 1e-4, "lr_backbone": 1e-5, "weight_decay": 1e-4}


@pytest.fixture(scope="module")
def model():
    return build_model("r101-detr", overrides=TINY)


def test_groups_split_backbone_and_exclude_frozen_parameters(model):
    optimizer = build_optimizer(model, TRAIN, torch.device("cpu"))
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["rest"]["lr"] == 1e-4 and groups["backbone"]["lr"] == 1e-5
    assert all(g["weight_decay"] == 1e-4 for g in optimizer.param_groups)
    names = {id(p): n for n, p in model.named_parameters()}
    backbone = {names[id(p)] for p in groups["backbone"]["params"]}
    rest = {names[id(p)] for p in groups["rest"]["params"]}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen, "freeze_at=2 must freeze the stem and res2"
    assert backbone | rest == trainable and not backbone & rest
    assert all(n.startswith("backbone.") for n in backbone)
    assert not any(n.startswith("backbone.") for n in rest)


def test_group_without_parameters_is_dropped():
    linear = torch.nn.Linear(2, 2)
    groups = parameter_groups(linear, lr=1.0, lr_backbone=0.1)
    assert [g["name"] for g in groups] == ["rest"]


@pytest.mark.parametrize(("iterations", "fraction", "drop"), [(250_000, 0.64, 160_000), (600, 0.64, 384),
                                                              (10, 0.25, 2), (7, 0.5, 4)])
def test_lr_drop_iteration(iterations, fraction, drop):
    assert lr_drop_iteration(iterations, fraction) == drop


def test_lr_drops_tenfold_exactly_at_the_drop_iteration():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [param], "lr": 1.0}, {"params": [], "lr": 0.5}])
    scheduler = build_lr_scheduler(optimizer, iterations=10, fraction=0.6)
    lrs = []
    for _ in range(10):
        lrs.append([g["lr"] for g in optimizer.param_groups])  # the lr update i uses
        optimizer.step()
        scheduler.step()
    assert lrs[:6] == [[1.0, 0.5]] * 6
    assert lrs[6:] == [pytest.approx([0.1, 0.05])] * 4


def test_cpu_always_runs_fp32():
    precision = Precision("bf16", torch.device("cpu"))
    assert precision.name == "fp32" and not precision.scaler.is_enabled()
    with precision.autocast():
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
