"""Validation metrics glue and the training-record files (JSON lines, dvclive curves) on resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from itersg.engine.logs import TrainingLog, truncate_json_log, truncate_tsv_curves
from itersg.engine.tasks import _scene_graph_score


def test_perfect_scene_graphs_score_full_recall(synthetic_vg):
    """Predictions equal to the evaluation ground truth must give R@50 = mR@50 = 1."""
    pytest.importorskip("itersg.evaluation.sg_metrics")
    from itersg.data.vg150 import load_split_ground_truth, load_vocabulary

    num_predicates = len(load_vocabulary(synthetic_vg).predicates)
    score = _scene_graph_score({"root": str(synthetic_vg), "num_val_images": 6}, num_predicates)
    pairs = []
    for image_id, gt in load_split_ground_truth(synthetic_vg, "val", 6).items():
        rel_scores = np.zeros((len(gt["relations"]), num_predicates + 1), np.float32)
        rel_scores[np.arange(len(gt["relations"])), gt["relations"][:, 2]] = 1.0
        prediction = {"boxes": gt["boxes"], "labels": gt["labels"], "scores": np.ones(len(gt["boxes"]), np.float32),
                      "rel_pairs": gt["relations"][:, :2], "rel_scores": rel_scores}
        pairs.append(({"image_id": image_id}, prediction))
    assert pairs
    result = score(pairs)
    assert result["R@50"] == pytest.approx(1.0)
    assert result["mR@50"] > 0


def test_resumed_log_drops_records_after_the_checkpoint(tmp_path):
    log = TrainingLog(tmp_path, active=True, resume_iteration=None)
    for iteration in (1, 2, 3, 4):
        log.record("train", iteration, {"loss": 1.0 / iteration}, curves=True)
    log.close()
    with (tmp_path / "log.jsonl").open("a") as handle:
        handle.write('{"event": "train", "iter')  # a line torn by a kill
    truncate_json_log(tmp_path / "log.jsonl", 2)
    truncate_tsv_curves(tmp_path / "dvclive", 2)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2]
    rows = (tmp_path / "dvclive" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()
    assert rows == ["step\tloss", "1\t1.0", "2\t0.5"]


def test_inactive_log_writes_nothing(tmp_path):
    log = TrainingLog(tmp_path / "rank1", active=False, resume_iteration=None)
    log.record("train", 1, {"loss": 1.0}, curves=True)
    log.close()
    assert not (tmp_path / "rank1").exists()
