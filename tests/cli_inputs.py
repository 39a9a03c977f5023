"""The files a user has after a demo run, made small: for tests that run the command line on them.

``build_inputs(root)`` writes a synthetic VG150 folder, untrained tiny IterativeSG and DETR
checkpoints, and the evaluation of the checkpoint (predictions.h5, metrics.json); ``demo_sets(data)``
gives the ``--params``/``--set`` options of a demo run on that folder with the tiny model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
TINY = {"hidden_dim": 32, "nheads": 2, "enc_layers": 1, "dec_layers": 2, "dim_feedforward": 64,
        "num_queries": 10, "backbone": {"small": True}}


@dataclass
class Inputs:
    root: Path          # the folder holding everything below
    data: Path
    checkpoint: Path
    detr: Path
    predictions: Path
    metrics: Path
    num_predicates: int


def demo_sets(data: Path, *extra: str) -> list[str]:
    """``--params``/``--set`` options of a demo run on ``data`` with a tiny model (two iterations)."""
    sets = ["mode=demo", f"data.root={data}", "data.num_val_images=6", "data.num_workers=0",
            "data.train_min_sizes=[48, 56]", "data.train_max_size=64", "data.crop_resize_sizes=[48]",
            "data.crop_size=[32, 48]", "data.test_size=56", "data.test_max_size=64", "train.batch_size=2",
            "train.iterations=2", "train.checkpoint_every=2", "train.val_every=100", "train.log_every=1",
            "train.keep_last=1", "study.eval_iterations=[2]", "evaluate.batch_size=8",
            f"model.overrides={json.dumps(TINY)}", *extra]
    return ["--params", str(PARAMS), *[arg for item in sets for arg in ("--set", item)]]


def build_inputs(root: Path) -> Inputs:
    """A synthetic dataset (40 images of 64 px), untrained tiny checkpoints and their evaluation."""
    from itersg.cli import main
    from itersg.data.synth import generate
    from itersg.data.vg150 import load_vocabulary
    from itersg.models.registry import build_detr, build_model

    data = generate(root / "vg", images=40, seed=0, image_size=64)
    vocabulary = load_vocabulary(data)
    classes, predicates = len(vocabulary.classes), len(vocabulary.predicates)
    torch.manual_seed(0)
    checkpoint, detr = root / "model.pth", root / "detr.pth"
    torch.save({"model": build_model("r101-detr", num_classes=classes, num_predicates=predicates,
                                     overrides=TINY).state_dict(), "iteration": 2}, checkpoint)
    torch.save({"model": build_detr("r101-detr", num_classes=classes, overrides=TINY).state_dict()}, detr)
    assert main(["evaluate", "--variant", "r101-detr", "--checkpoint", str(checkpoint), "--out",
                 str(root / "eval"), *demo_sets(data)]) == 0
    return Inputs(root, data, checkpoint, detr, root / "eval" / "predictions.h5", root / "eval" / "metrics.json",
                  predicates)
