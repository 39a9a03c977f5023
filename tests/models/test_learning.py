"""A small IterativeSG learns: it overfits a handful of synthetic scenes until R@20 >= 0.9."""

from __future__ import annotations

import pytest
import torch

from itersg.evaluation.sg_metrics import scene_graph_scores
from itersg.models import build_model
from itersg.models.losses.build import build_criterion
from itersg.models.postprocess import postprocess_scene_graphs


def recall_at_20(predictions: list[dict], targets: list[dict]) -> float:
    """R@20 of the project's evaluator (IterativeSG's rule: classes and predicate equal, IoU >= 0.5)."""
    pairs = [({k: target[k].numpy() for k in ("boxes", "labels", "relations")},
              {k: v.numpy() for k, v in prediction.items() if k != "image_id"})
             for prediction, target in zip(predictions, targets)]
    return scene_graph_scores(pairs, num_predicates=4).recall[20]


def overfit(model: torch.nn.Module, criterion: torch.nn.Module, images: list, targets: list[dict],
            max_iterations: int = 600, goal: float = 0.9, optimizer: torch.optim.Optimizer | None = None,
            clip: float = 1.0) -> tuple[float, float, int]:
    """AdamW (default: lr 1e-3 for all) with gradient clipping on the same images until R@20 >= goal: (R@20
    at the start, then at the end, and the iterations it took). R@20 is measured every 25 iterations in
    eval mode."""

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            predictions = postprocess_scene_graphs(model(images), [t["size"] for t in targets],
                                                   [t["orig_size"] for t in targets])
        model.train()
        return recall_at_20(predictions, targets)

    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    start, recall = evaluate(), 0.0
    for iteration in range(1, max_iterations + 1):
        loss = criterion.weighted_total(criterion(model(images), targets))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if iteration % 25 == 0:
            recall = evaluate()
            if recall >= goal:  # typically after 50-100 iterations (a few seconds on an idle CPU)
                break
    return start, recall, iteration


@pytest.mark.slow
def test_small_model_overfits_synthetic_scenes(scenes):
    torch.manual_seed(0)
    data = scenes(8, size=96, seed=1)
    images, targets = [image for image, _ in data], [target for _, target in data]
    overrides = {"hidden_dim": 64, "nheads": 4, "enc_layers": 1, "dec_layers": 2, "dim_feedforward": 128,
                 "num_queries": 12, "dropout": 0.0, "backbone": {"small": True}}
    model = build_model("r101-detr", num_classes=4, num_predicates=4, overrides=overrides)
    start, recall, iterations = overfit(model, build_criterion(model), images, targets)
    assert start < 0.5
    assert recall >= 0.9, f"R@20 {recall:.2f} after {iterations} iterations"
