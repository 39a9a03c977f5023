"""A broken VG150 h5 under every command that reads it: one error line naming the file and the field.

Each corruption of ``vg150_corruptions.CORRUPTIONS`` (which ``tests/data/test_verify.py`` runs under
``data verify``) under every command that opens the h5; then what the reference tolerates (a box wholly
outside its image, a predicate without training relations), which must still work.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from bad_inputs_cases import Case
from cli_inputs import Inputs, demo_sets
from vg150_corruptions import CORRUPTIONS, H5, box_outside_its_image, keep_predicate_1_out_of_training


def _metrics(f: Inputs) -> list[str]:
    return ["metrics", "--data", str(f.data), "--predictions", str(f.predictions), "--out", str(f.root / "m.json")]


def _prepare(f: Inputs) -> list[str]:
    return ["data", "prepare", "--root", str(f.data), "--out", str(f.root / "summary.json"), "--num-val", "6"]


def _train(f: Inputs) -> list[str]:
    return ["train", "--variant", "r101-detr", "--out", str(f.root / "run"), *demo_sets(f.data)]


def _pretrain(f: Inputs) -> list[str]:
    return ["pretrain-detr", "--out", str(f.root / "detr-run"), *demo_sets(f.data)]


def _evaluate(f: Inputs) -> list[str]:
    return ["evaluate", "--variant", "r101-detr", "--checkpoint", str(f.checkpoint), "--out", str(f.root / "ev"),
            *demo_sets(f.data)]


COMMANDS = {"metrics": _metrics, "prepare": _prepare, "train": _train, "pretrain-detr": _pretrain,
            "evaluate": _evaluate}


def _says(field: str) -> Callable[[Inputs], tuple[str, str]]:
    return lambda f: (str(f.data / H5), field)


def _broken(corrupt: Callable[[Path], None]) -> Callable[[Inputs], None]:
    return lambda f: corrupt(f.data)


def _crossed() -> dict[str, Case]:
    """Every corruption under every command (each fails in about 0.1 s, before any model is built)."""
    return {f"{command}-{corruption}": Case(argv, _says(field), setup=_broken(corrupt))
            for corruption, (corrupt, field) in CORRUPTIONS.items() for command, argv in COMMANDS.items()}


def _zero_frequency(f: Inputs) -> None:
    summary = json.loads((f.root / "summary.json").read_text())
    assert summary["predicate_frequencies"][0] == 0 and summary["split_sizes"]["train"] > 0, summary


def _trained(f: Inputs) -> None:
    assert (f.root / "run" / "model_final.pth").is_file()


def _scored(f: Inputs) -> None:
    assert json.loads((f.root / "m.json").read_text())["num_images"] > 0


CASES = {
    **_crossed(),
    "metrics-box-outside-its-image-is-dropped": Case(_metrics, "", setup=_broken(box_outside_its_image),
                                                     check=_scored),
    "prepare-predicate-without-training-relations": Case(
        _prepare, "", setup=_broken(keep_predicate_1_out_of_training), check=_zero_frequency),
    "train-predicate-without-training-relations": Case(
        _train, "", setup=_broken(keep_predicate_1_out_of_training), check=_trained),
}
