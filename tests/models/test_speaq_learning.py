"""A small SpeaQ model learns: it overfits a handful of synthetic scenes until R@20 >= 0.9."""

from __future__ import annotations

import pytest
import torch
from test_learning import overfit

from itersg.models import build_model
from itersg.models.losses.build import build_criterion
from itersg.models.losses.speaq import SpeaQCriterion


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
    start, recall, iterations = overfit(model, criterion, images, targets)
    assert start < 0.5
    assert recall >= 0.9, f"R@20 {recall:.2f} after {iterations} iterations"
