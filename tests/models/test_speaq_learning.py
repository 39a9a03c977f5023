"""A small SpeaQ model learns: it overfits a handful of synthetic scenes until R@20 >= 0.9."""

from __future__ import annotations

import pytest
import torch
from test_learning import recall_at_20

from itersg.models import build_model
from itersg.models.criterion import build_criterion
from itersg.models.postprocess import postprocess_scene_graphs
from itersg.models.speaq import SpeaQCriterion


@pytest.mark.slow
def test_small_speaq_model_overfits_synthetic_scenes(scenes):
    torch.manual_seed(0)
    data = scenes(8, size=96, seed=1)
    images, targets = [image for image, _ in data], [target for _, target in data]
    overrides = {"hidden_dim": 64, "nheads": 4, "enc_layers": 1, "dec_layers": 2, "dim_feedforward": 128,
                 "num_queries": 12, "dropout": 0.0, "backbone": {"small": True}, "speaq": {"num_groups": 2}}
    model = build_model("r101-detr-speaq", num_classes=4, num_predicates=4, overrides=overrides)
    counts = torch.bincount(torch.cat([t["relations"][:, 2] for t in targets]), minlength=4)
    criterion = build_criterion(model, predicate_counts=counts)
    assert isinstance(criterion, SpeaQCriterion) and model.relation_query_embed.num_embeddings == 24
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            predictions = postprocess_scene_graphs(model(images), [t["size"] for t in targets],
                                                   [t["orig_size"] for t in targets])
        model.train()
        return recall_at_20(predictions, targets)

    assert evaluate() < 0.5
    recall = 0.0
    for iteration in range(1, 601):
        loss = criterion.weighted_total(criterion(model(images), targets))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if iteration % 25 == 0:
            recall = evaluate()
            if recall >= 0.9:
                break
    assert recall >= 0.9, f"R@20 {recall:.2f} after {iteration} iterations"
