"""A SpeaQ variant trains through the engine with its own recipe (iterations, batch, evaluated checkpoints)."""

from __future__ import annotations

import yaml

from itersg.engine.checkpoint import list_checkpoints, load_checkpoint
from itersg.engine.runner import run_training


def test_speaq_variant_trains_with_its_own_recipe(tiny_params, tmp_path):
    # the study says 6 iterations, batch 4, checkpoint 3 kept; the SpeaQ variant says 4, batch 2, [2]
    params = tiny_params("variants.r101-detr-speaq.iterations=4", "variants.r101-detr-speaq.batch_size=2",
                         "variants.r101-detr-speaq.eval_iterations=[2]")
    assert run_training(params, "train", tmp_path, variant="r101-detr-speaq") == 0
    recorded = yaml.safe_load((tmp_path / "config_resolved.yaml").read_text())
    assert recorded["train"]["iterations"] == 4 and recorded["train"]["batch_size"] == 2
    assert recorded["study"]["eval_iterations"] == [2]
    assert 2 in [iteration for iteration, _ in list_checkpoints(tmp_path / "checkpoints")]
    final = load_checkpoint(tmp_path / "model_final.pth")
    assert final["iteration"] == 4 and final["variant"] == "r101-detr-speaq"
    assert final["model"]["relation_query_embed.weight"].shape == (20, 32)  # 2 x 10 queries, width 32
