"""The r101-detr chain: pretrain DETR -> replicate its decoder -> `itersg train --init` (ignored on resume)."""

from __future__ import annotations

from pathlib import Path

import torch

from itersg.cli import main
from itersg.engine.signals import EXIT_PREEMPTED

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _args(sets: list[str]) -> list[str]:
    return ["--params", str(PARAMS), *(arg for s in sets for arg in ("--set", s))]


def test_pretrained_detr_initialises_iterativesg(tiny_sets, synthetic_vg, tmp_path):
    from itersg.data.vg150 import load_vocabulary

    detr_sets = tiny_sets("detr_weights.pretrain_iterations=2", "detr_weights.pretrain_batch_size=2")
    assert main(["pretrain-detr", "--out", str(tmp_path / "detr"), *_args(detr_sets)]) == 0
    init = tmp_path / "init.pth"
    num_predicates = len(load_vocabulary(synthetic_vg).predicates)
    assert main(["replicate-decoder", "--detr", str(tmp_path / "detr" / "model_final.pth"), "--out", str(init),
                 "--num-predicates", str(num_predicates), *_args(tiny_sets())]) == 0

    # A learning rate of ~0 keeps the weights where --init put them.
    sets = tiny_sets("train.iterations=2", "train.lr=1.0e-12", "train.lr_backbone=0", "study.eval_iterations=[2]")
    assert main(["train", "--variant", "r101-detr", "--out", str(tmp_path / "isg"), "--init", str(init),
                 *_args(sets)]) == 0
    detr = torch.load(tmp_path / "detr" / "model_final.pth", weights_only=True)["model"]
    trained = torch.load(tmp_path / "isg" / "model_final.pth", weights_only=True)["model"]
    replicated = [k for k in detr if k.startswith("transformer.decoder.layers.")]
    assert replicated
    for key in replicated:
        target = key.replace("transformer.decoder.layers.", "transformer.decoder.relation_layers.")
        torch.testing.assert_close(trained[target], detr[key], atol=1e-6, rtol=0)


def test_init_is_ignored_when_resuming(tiny_sets, tmp_path):
    out = tmp_path / "run"
    sets = tiny_sets("train.iterations=2", "study.eval_iterations=[2]")
    stopped = main(["train", "--variant", "r101-detr", "--out", str(out), "--stop-at", "1", *_args(sets)])
    assert stopped == EXIT_PREEMPTED
    missing = tmp_path / "no-such-init.pth"
    assert main(["train", "--variant", "r101-detr", "--out", str(out), "--init", str(missing), *_args(sets)]) == 0
    assert (out / "model_final.pth").exists()


def test_missing_init_file_is_a_user_error(tiny_sets, tmp_path, capsys):
    sets = tiny_sets("train.iterations=2", "study.eval_iterations=[2]")
    status = main(["train", "--variant", "r101-detr", "--out", str(tmp_path / "run"), "--init",
                   str(tmp_path / "missing.pth"), *_args(sets)])
    assert status == 2 and "missing.pth" in capsys.readouterr().err
