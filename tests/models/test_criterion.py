"""IterativeSG and DETR losses: targets, predicate re-weighting, loss names and weights, training signal."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from itersg.models import build_detr, build_model
from itersg.models.config import LossConfig
from itersg.models.losses.build import build_criterion
from itersg.models.losses.criterion import SetCriterion, TripletCriterion, predicate_class_weights
from itersg.models.losses.targets import center_boxes, relation_targets


def test_predicate_weights_follow_the_reference_formula():
    frequencies = torch.tensor([0.5, 0.07, 0.01, 0.0])
    weights = predicate_class_weights(frequencies, 4, alpha=0.07, beta=0.75, no_relation_weight=0.1)
    # reference: max(sqrt(oversample / (f + 1e-5)), 1) ** undersample with undersample = 2 * beta
    reference = [max(math.sqrt(0.07 / (f + 1e-5)), 1.0) ** 1.5 for f in frequencies.tolist()]
    torch.testing.assert_close(weights[:4], torch.tensor(reference))
    assert weights[0] == 1.0 and weights[1] == 1.0 and weights[2] > 1.0 and weights[-1] == pytest.approx(0.1)
    assert predicate_class_weights(None, 3, 0.07, 0.75, 0.1).tolist() == pytest.approx([1, 1, 1, 0.1])
    with pytest.raises(ValueError, match="frequencies"):
        predicate_class_weights(torch.ones(3), 4, 0.07, 0.75, 0.1)


def test_loss_config_reads_params_sections():
    config = LossConfig.from_params({"class_weight": 2.0, "fcos_weight": 0.5, "no_object_weight": 0.2},
                                    {"alpha": 0.1, "beta": 1.0})
    assert (config.class_weight, config.aux_head_weight, config.no_object_weight) == (2.0, 0.5, 0.2)
    assert (config.alpha, config.beta, config.bbox_weight) == (0.1, 1.0, 5.0)
    assert config.matcher().cost_class == 2.0


def test_relation_box_runs_from_subject_centre_to_object_centre():
    size = torch.tensor([100, 200])  # H, W
    sub = torch.tensor([[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 20.0, 20.0]])
    obj = torch.tensor([[100.0, 40.0, 140.0, 80.0], [100.0, 0.0, 140.0, 20.0]])
    boxes = center_boxes(sub, obj, size)
    # centres (10, 10) and (120, 60): box x 10..120, y 10..60 -> cx 65/200, cy 35/100, w 110/200, h 50/100
    torch.testing.assert_close(boxes[0], torch.tensor([0.325, 0.35, 0.55, 0.5]))
    # centres on one row: degenerate, the subject box is used instead
    torch.testing.assert_close(boxes[1], torch.tensor([0.05, 0.1, 0.1, 0.2]))


def test_relation_targets_index_boxes_by_relation():
    target = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 30.0, 50.0]]),
              "labels": torch.tensor([4, 7]), "relations": torch.tensor([[1, 0, 3]]),
              "size": torch.tensor([50, 100])}
    (prepared,) = relation_targets([target])
    assert prepared["sub_labels"].tolist() == [7] and prepared["obj_labels"].tolist() == [4]
    assert prepared["rel_labels"].tolist() == [3]
    torch.testing.assert_close(prepared["sub_boxes"], torch.tensor([[0.2, 0.6, 0.2, 0.8]]))


def test_triplet_criterion_names_every_layer_and_weights_it(small_overrides, scenes):
    torch.manual_seed(0)
    model = build_model("r101-detr", num_classes=4, num_predicates=4, overrides=small_overrides)
    criterion = build_criterion(model, LossConfig(), torch.full((4,), 0.25))
    assert isinstance(criterion, TripletCriterion)
    images, targets = zip(*scenes(2, size=64))
    losses = criterion(model(list(images)), list(targets))
    per_layer = {f"loss_{b}_{k}" for b in ("sub", "obj", "rel") for k in ("ce", "bbox", "giou")}
    expected = per_layer | {f"{k}_{i}" for k in per_layer for i in range(2)}
    assert set(losses) == expected == set(criterion.weight_dict)
    assert criterion.weight_dict["loss_rel_bbox_1"] == 5.0 and criterion.weight_dict["loss_obj_giou"] == 2.0
    assert all(torch.isfinite(v) and v >= 0 for v in losses.values())
    total = criterion.weighted_total(losses)
    assert total.item() == pytest.approx(sum(criterion.weight_dict[k] * v.item() for k, v in losses.items()),
                                         rel=1e-5)
    total.backward()
    assert model.rel_class_embed.weight.grad.abs().sum() > 0


def test_no_relation_class_is_weighted_down(small_overrides):
    criterion = TripletCriterion(4, 3, LossConfig(no_object_weight=0.2, no_relation_weight=0.3))
    assert criterion.entity_class_weight.tolist() == pytest.approx([1, 1, 1, 1, 0.2])
    assert criterion.predicate_class_weight.tolist() == pytest.approx([1, 1, 1, 0.3])


def test_images_without_relations_give_finite_losses(small_overrides, scenes):
    torch.manual_seed(0)
    model = build_model("r101-detr", num_classes=4, num_predicates=4, overrides=small_overrides)
    criterion = build_criterion(model)
    images, targets = zip(*scenes(2, size=64))
    targets = [dict(t) for t in targets]
    for t in targets:
        t["relations"] = torch.zeros(0, 3, dtype=torch.int64)
    losses = criterion(model(list(images)), targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_rel_bbox"] == 0 and losses["loss_sub_ce"] > 0


def _train(model: nn.Module, criterion: nn.Module, images: list, targets: list, steps: int) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(steps):
        total = criterion.weighted_total(criterion(model(images), targets))
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    return history


def test_iterativesg_loss_decreases_on_a_tiny_batch(small_overrides, scenes):
    torch.manual_seed(0)
    overrides = {**small_overrides, "dropout": 0.0}
    model = build_model("r101-detr", num_classes=4, num_predicates=4, overrides=overrides)
    images, targets = zip(*scenes(3, size=64))
    history = _train(model, build_criterion(model), list(images), list(targets), steps=8)
    assert all(math.isfinite(h) for h in history)
    assert min(history[-3:]) < 0.8 * history[0]


def test_detr_loss_decreases_on_a_tiny_batch(small_overrides, scenes):
    torch.manual_seed(0)
    model = build_detr("r101-detr", num_classes=4, overrides={**small_overrides, "dropout": 0.0})
    criterion = build_criterion(model)
    assert isinstance(criterion, SetCriterion)
    images, targets = zip(*scenes(3, size=64))
    losses = criterion(model(list(images)), list(targets))
    assert set(losses) == {f"loss_{k}{s}" for k in ("ce", "bbox", "giou") for s in ("", "_0", "_1")}
    history = _train(model, criterion, list(images), list(targets), steps=10)
    assert min(history[-3:]) < 0.8 * history[0]


class CountingHead(nn.Module):
    """A minimal auxiliary head: predicts the number of objects from the res5 mean."""

    def __init__(self, channels: int):
        super().__init__()
        self.linear = nn.Linear(channels, 1)

    def forward(self, features: dict) -> dict:
        return {"count": self.linear(features["res5"].mean((2, 3))).squeeze(1)}

    def loss(self, outputs: dict, targets: list, image_sizes: list) -> dict:
        assert all(isinstance(s, tuple) and len(s) == 2 for s in image_sizes)
        counts = torch.tensor([float(len(t["labels"])) for t in targets])
        return {"loss_count": ((outputs["count"] - counts) ** 2).mean()}


def test_aux_head_outputs_and_losses_join_the_model(small_overrides, scenes):
    torch.manual_seed(0)
    model = build_model("r101-detr", num_classes=4, num_predicates=4, overrides=small_overrides)
    model.aux_head = CountingHead(model.backbone.out_channels)
    criterion = build_criterion(model, LossConfig(aux_head_weight=0.5))
    assert not any(k.startswith("aux_head") for k in criterion.state_dict())
    images, targets = zip(*scenes(2, size=64))
    out = model(list(images))
    assert out["aux_head"]["count"].shape == (2,)
    losses = criterion(out, list(targets))
    assert criterion.weight_dict["loss_count"] == 0.5
    criterion.weighted_total(losses).backward()
    assert model.aux_head.linear.weight.grad is not None
