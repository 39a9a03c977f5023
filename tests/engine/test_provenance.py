"""The fingerprint that decides whether a checkpoint or a finished run belongs to this run."""

from __future__ import annotations

from itersg.engine.provenance import fingerprint, stage_params


def test_only_keys_that_change_the_result_count(tiny_params):
    base = fingerprint(tiny_params(), "train", "r101-detr")
    assert fingerprint(tiny_params("train.checkpoint_every=7", "train.keep_last=9"), "train", "r101-detr") == base
    assert fingerprint(tiny_params("train.lr=0.002"), "train", "r101-detr") != base
    assert fingerprint(tiny_params("variants.r101-detr.alpha=0.5"), "train", "r101-detr") != base
    assert fingerprint(tiny_params(), "train", "vovnet39-detr") != base


def test_detr_pretraining_ignores_the_scene_graph_settings(tiny_params):
    base = fingerprint(tiny_params(), "pretrain_detr", "r101-detr")
    assert fingerprint(tiny_params("variants.r101-detr.alpha=0.5", "train.iterations=9",
                                   "study.eval_iterations=[9]"), "pretrain_detr", "r101-detr") == base
    assert fingerprint(tiny_params("detr_weights.pretrain_iterations=9"), "pretrain_detr", "r101-detr") != base
    assert "detr_weights.pretrain_batch_size" in stage_params(tiny_params(), "pretrain_detr")
