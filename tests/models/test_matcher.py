"""Hungarian matching equals an exhaustive search over assignments (itertools.permutations)."""

from __future__ import annotations

import itertools

import pytest
import torch

from itersg.models.config import MatcherConfig
from itersg.models.losses.matcher import HungarianMatcher, TripletMatcher
from itersg.models.losses.targets import relation_targets


def giou(a: list[float], b: list[float]) -> float:
    """GIoU of two cxcywh boxes, written out by hand."""
    ax1, ay1, ax2, ay2 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx1, by1, bx2, by2 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = a[2] * a[3] + b[2] * b[3] - inter
    hull = (max(ax2, bx2) - min(ax1, bx1)) * (max(ay2, by2) - min(ay1, by1))
    return inter / union - (hull - union) / hull


def pair_cost(logits, box, label, target_box, w: MatcherConfig) -> float:
    prob = torch.softmax(logits, -1)[label].item()
    l1 = sum(abs(p - t) for p, t in zip(box.tolist(), target_box.tolist()))
    return w.cost_bbox * l1 - w.cost_class * prob - w.cost_giou * giou(box.tolist(), target_box.tolist())


def random_layer(batch: int, queries: int, classes: int, predicates: int) -> dict:
    layer = {}
    for b, k in (("sub", classes + 1), ("obj", classes + 1), ("rel", predicates + 1)):
        layer[f"pred_{b}_logits"] = torch.randn(batch, queries, k)
        centre, size = torch.rand(batch, queries, 2) * 0.6 + 0.2, torch.rand(batch, queries, 2) * 0.3 + 0.05
        layer[f"pred_{b}_boxes"] = torch.cat([centre, size], -1)
    return layer


def random_targets(batch: int, relations: int, classes: int, predicates: int,
                   g: torch.Generator) -> list[dict]:
    targets = []
    for _ in range(batch):
        xy = torch.rand(4, 2, generator=g) * 60
        boxes = torch.cat([xy, xy + 5 + torch.rand(4, 2, generator=g) * 30], -1)
        rows = torch.stack([torch.randperm(4, generator=g)[:2] for _ in range(relations)])
        relation = torch.cat([rows, torch.randint(0, predicates, (relations, 1), generator=g)], 1)
        targets.append({"boxes": boxes, "labels": torch.randint(0, classes, (4,), generator=g),
                        "relations": relation, "size": torch.tensor([100, 120])})
    return targets


def brute_force(cost: list[list[float]]) -> float:
    queries, targets = len(cost), len(cost[0])
    assignments = itertools.permutations(range(queries), targets)  # query of target 0, of target 1, ...
    return min(sum(cost[q][t] for t, q in enumerate(perm)) for perm in assignments)


@pytest.mark.parametrize("seed", range(4))
def test_triplet_matcher_minimises_the_cost_summed_over_branches_and_layers(seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    weights = MatcherConfig(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0)
    layers = [random_layer(2, 5, 3, 2) for _ in range(3)]
    outputs = {**layers[-1], "aux_outputs": layers[:-1]}
    prepared = relation_targets(random_targets(2, 3, 3, 2, g))
    indices = TripletMatcher(weights)(outputs, prepared)
    for image, (rows, cols) in enumerate(indices):
        target = prepared[image]
        cost = [[sum(pair_cost(layer[f"pred_{b}_logits"][image, q], layer[f"pred_{b}_boxes"][image, q],
                               target[f"{b}_labels"][t], target[f"{b}_boxes"][t], weights)
                     for layer in layers for b in ("sub", "obj", "rel"))
                 for t in range(3)] for q in range(5)]
        assert sorted(cols.tolist()) == [0, 1, 2] and len(set(rows.tolist())) == 3
        found = sum(cost[q][t] for q, t in zip(rows.tolist(), cols.tolist()))
        assert found == pytest.approx(brute_force(cost), abs=1e-4)


def test_triplet_matcher_batched_equals_per_image():
    torch.manual_seed(7)
    g = torch.Generator().manual_seed(7)
    outputs = {**random_layer(3, 6, 4, 3), "aux_outputs": [random_layer(3, 6, 4, 3)]}
    prepared = relation_targets(random_targets(3, 2, 4, 3, g))
    batched = TripletMatcher()(outputs, prepared)
    for image in range(3):
        single = {k: v[image:image + 1] for k, v in outputs.items() if k != "aux_outputs"}
        single["aux_outputs"] = [{k: v[image:image + 1] for k, v in outputs["aux_outputs"][0].items()}]
        (rows, cols), = TripletMatcher()(single, prepared[image:image + 1])
        assert torch.equal(rows, batched[image][0]) and torch.equal(cols, batched[image][1])


def test_triplet_matcher_handles_images_without_relations():
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(1)
    targets = random_targets(2, 2, 3, 2, g)
    targets[0]["relations"] = torch.zeros(0, 3, dtype=torch.int64)
    indices = TripletMatcher()({**random_layer(2, 4, 3, 2)}, relation_targets(targets))
    assert len(indices[0][0]) == 0 and len(indices[1][0]) == 2


def test_detr_matcher_minimises_the_single_layer_cost():
    torch.manual_seed(3)
    weights = MatcherConfig()
    logits = torch.randn(1, 5, 4)
    boxes = torch.cat([torch.rand(1, 5, 2) * 0.5 + 0.25, torch.rand(1, 5, 2) * 0.3 + 0.1], -1)
    target_boxes = torch.tensor([[0.3, 0.4, 0.2, 0.2], [0.6, 0.5, 0.3, 0.1], [0.5, 0.5, 0.4, 0.4]])
    targets = [{"labels": torch.tensor([0, 2, 2]), "boxes": target_boxes}]
    (rows, cols), = HungarianMatcher(weights)({"pred_logits": logits, "pred_boxes": boxes}, targets)
    cost = [[pair_cost(logits[0, q], boxes[0, q], targets[0]["labels"][t], targets[0]["boxes"][t], weights)
             for t in range(3)] for q in range(5)]
    found = sum(cost[q][t] for q, t in zip(rows.tolist(), cols.tolist()))
    assert found == pytest.approx(brute_force(cost), abs=1e-4)
