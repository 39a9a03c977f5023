"""Checkpoints that cannot be used: text, a cut-off file, no weights, unknown weights, NaN weights.

Every command that reads weights (evaluate, predict, train --init, replicate-decoder) names the file in
one error line and writes nothing.
"""

from __future__ import annotations

import json

import torch

from bad_inputs_cases import Case
from cli_inputs import TINY, demo_sets

NOT_A_CHECKPOINT = "not a usable checkpoint: it is not a (complete) PyTorch checkpoint file"
NO_WEIGHTS = "holds no weights (an empty state dict)"
NON_FINITE = "weight tensors hold NaN or infinite values"


# --- command lines: each reads the spoilt file (f.checkpoint for the IterativeSG ones, f.detr for DETR) -------

def _evaluate(f) -> list[str]:
    return ["evaluate", "--variant", "r101-detr", "--checkpoint", str(f.checkpoint), "--out", str(f.root / "ev"),
            *demo_sets(f.data)]


def _predict(f) -> list[str]:
    image = next((f.data / "VG_100K").iterdir())
    return ["predict", str(image), "--variant", "r101-detr", "--checkpoint", str(f.checkpoint), "--out",
            str(f.root / "pred"), *demo_sets(f.data)]


def _train_init(f) -> list[str]:
    return ["train", "--variant", "r101-detr", "--init", str(f.checkpoint), "--out", str(f.root / "run"),
            *demo_sets(f.data)]


def _replicate(f) -> list[str]:
    return ["replicate-decoder", "--detr", str(f.detr), "--out", str(f.root / "init.pth"), "--overrides",
            json.dumps(TINY), "--num-predicates", str(f.num_predicates)]


# --- spoilt files ---------------------------------------------------------------------------------------------

def _text(f) -> None:
    for path in (f.checkpoint, f.detr):
        path.write_text("model weights: see the shared drive\n")


def _cut(f) -> None:
    for path in (f.checkpoint, f.detr):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


def _saved(content: dict):
    def setup(f) -> None:
        for path in (f.checkpoint, f.detr):
            torch.save(content, path)
    return setup


def _nan(f) -> None:
    for path in (f.checkpoint, f.detr):
        saved = torch.load(path, weights_only=True)
        saved["model"] = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in saved["model"].items()}
        torch.save(saved, path)


def _one(argv, setup, text: str, which: str = "checkpoint") -> Case:
    """``argv`` after ``setup``: one line naming the spoilt file (``f.<which>``) and holding ``text``."""
    return Case(argv, lambda f: (f"{getattr(f, which)}: ", text), setup=setup)


CASES = {
    "evaluate-text-file": _one(_evaluate, _text, NOT_A_CHECKPOINT),
    "evaluate-cut-off-file": _one(_evaluate, _cut, NOT_A_CHECKPOINT),
    "evaluate-empty-state-dict": _one(_evaluate, _saved({"model": {}}), NO_WEIGHTS),
    "evaluate-bare-empty-dict": _one(_evaluate, _saved({}), NO_WEIGHTS),
    "evaluate-unknown-weights": _one(_evaluate, _saved({"model": {"fc.weight": torch.zeros(2)}}),
                                     "unrecognised checkpoint"),
    "evaluate-nan-weights": _one(_evaluate, _nan, NON_FINITE),
    "predict-text-file": _one(_predict, _text, NOT_A_CHECKPOINT),
    "predict-empty-state-dict": _one(_predict, _saved({"model": {}}), NO_WEIGHTS),
    "predict-nan-weights": _one(_predict, _nan, NON_FINITE),
    "train-init-text-file": _one(_train_init, _text, NOT_A_CHECKPOINT),
    "train-init-empty-state-dict": _one(_train_init, _saved({"model": {}}), NO_WEIGHTS),
    "train-init-nan-weights": _one(_train_init, _nan, NON_FINITE),
    "replicate-decoder-text-file": _one(_replicate, _text, NOT_A_CHECKPOINT, "detr"),
    "replicate-decoder-empty-state-dict": _one(_replicate, _saved({"model": {}}), NO_WEIGHTS, "detr"),
    "replicate-decoder-unknown-weights": _one(_replicate, _saved({"model": {"fc.weight": torch.zeros(2)}}),
                                              "unrecognised checkpoint", "detr"),
    "replicate-decoder-nan-weights": _one(_replicate, _nan, NON_FINITE, "detr"),
    "replicate-decoder-given-iterativesg": Case(
        lambda f: ["replicate-decoder", "--detr", str(f.checkpoint), "--out", str(f.root / "init.pth")],
        lambda f: (f"{f.checkpoint}: expected a DETR checkpoint, found iterativesg weights", "itersg pretrain-detr")),
}
