"""Benchmark arguments no measurement can use, and broken side files: an oracle, a zero-shot file, a manifest.

Sizes and counts must be at least 1 (``--warmup`` and ``--workers`` at least 0): argparse refuses the
others before any work. An oracle that is not the reference evaluator's port, a zero-shot file that is
not a tensor of triplets and a manifest that is not there are each one line naming the file.
"""

from __future__ import annotations

import json

import torch

from bad_inputs_cases import Case
from cli_inputs import TINY


def _bench(*argv: str):
    return lambda f: ["bench", *argv]


def _refused(argv: list[str], option: str, value: str) -> Case:
    """``itersg bench ARGV OPTION VALUE``: argparse names the option and the value."""
    return Case(_bench(*argv, option, value), f"argument {option}: ")


def _model(verb: str) -> list[str]:
    """A tiny model run once on tiny images: only the option under test is wrong."""
    return [verb, "--overrides", json.dumps(TINY), "--height", "32", "--width", "32", "--iterations", "1",
            "--warmup", "0", "--batch-size", "1", "--precision", "fp32"]


def _write(name: str, data: bytes | None = None, tensor=None):
    def setup(f) -> None:
        if tensor is not None:
            torch.save(tensor, f.root / name)
        else:
            (f.root / name).write_bytes(data)
    return setup


def _oracle(name: str):
    return lambda f: ["bench", "metrics", "--images", "2", "--oracle", str(f.root / name)]


def _metrics_with_zero_shot(f) -> list[str]:
    return ["metrics", "--data", str(f.data), "--predictions", str(f.predictions), "--out", str(f.root / "m.json"),
            "--zero-shot", str(f.root / "zs.pytorch")]


def _zero_shot(setup, *says: str) -> Case:
    return Case(_metrics_with_zero_shot, lambda f: (f"{f.root / 'zs.pytorch'}: ", *says), setup=setup)


CASES = {
    **{f"{verb}-{label}-images": _refused([verb], "--images", value)
       for verb in ("metrics", "box-ap", "evaluate") for label, value in (("zero", "0"), ("negative", "-5"))},
    "loader-negative-workers": _refused(["loader"], "--workers", "-1"),
    "loader-zero-images": _refused(["loader"], "--images", "0"),
    "loader-zero-batches": _refused(["loader"], "--batches", "0"),
    "loader-zero-batch-size": _refused(["loader"], "--batch-size", "0"),
    **{f"{verb}-zero-{option}": _refused(_model(verb), f"--{option}", "0")
       for verb in ("infer", "train") for option in ("batch-size", "height", "width", "iterations")},
    "infer-negative-warmup": _refused(_model("infer"), "--warmup", "-1"),
    "infer-overrides-not-json": Case(_bench("infer", "--overrides", "{dec_layers: 2}"),
                                     ("argument --overrides: not valid JSON", "e.g. '{\"dec_layers\": 2}'")),
    "infer-overrides-a-list": Case(_bench("infer", "--overrides", "[2]"),
                                   "argument --overrides: expected a JSON object"),
    "infer-tiny-images-run": Case(_bench(*_model("infer")), ""),
    "oracle-not-python": Case(_oracle("oracle.txt"), lambda f: f"{f.root / 'oracle.txt'}: cannot be run as the oracle",
                              setup=_write("oracle.txt", b"scores per predicate, see the paper\n")),
    "oracle-syntax-error": Case(_oracle("oracle.py"), lambda f: f"{f.root / 'oracle.py'}: cannot be run as the oracle "
                                                                "(SyntaxError",
                                setup=_write("oracle.py", b"def oracle_scores(:\n")),
    "oracle-without-the-function": Case(_oracle("oracle.py"),
                                        lambda f: f"{f.root / 'oracle.py'}: has no function oracle_scores",
                                        setup=_write("oracle.py", b"def scores():\n    return {}\n")),
    "oracle-missing": Case(_oracle("none.py"), lambda f: f"{f.root / 'none.py'}: oracle not found"),
    "zero-shot-garbage": _zero_shot(_write("zs.pytorch", b"subject,object,predicate\n1,2,3\n"),
                                    "not a file of zero-shot triplets saved by torch"),
    "zero-shot-wrong-shape": _zero_shot(_write("zs.pytorch", tensor=torch.ones(4, dtype=torch.long)),
                                        "found shape (4,)"),
    "zero-shot-not-a-tensor": _zero_shot(_write("zs.pytorch", tensor={"triplets": [1, 2, 3]}), "found dict"),
    "manifest-missing": Case(
        lambda f: ["fetch", "vg", "--dest", str(f.root / "dest"), "--manifest", str(f.root / "none.yaml")],
        lambda f: (f"{f.root / 'none.yaml'}: cannot read the manifest", "check --manifest")),
}
