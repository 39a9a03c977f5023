"""Settings of the wrong type or value: the error names the key, the value and what is expected."""

from __future__ import annotations

import json

from bad_inputs_cases import Case
from cli_inputs import PARAMS, demo_sets


def _train(*sets: str, params: str | None = None):
    """``itersg train`` of the tiny demo model with extra ``--set``s (and another params file)."""
    def argv(f) -> list[str]:
        own = ["--params", str(f.root / params)] if params else []
        return ["train", "--variant", "r101-detr", "--out", str(f.root / "run"), *demo_sets(f.data, *sets), *own]
    return argv


def _write(name: str, data: bytes):
    return lambda f: (f.root / name).write_bytes(data)


PARAMS_TEXT = PARAMS.read_text(encoding="utf-8")
DUPLICATE_SECTION = PARAMS_TEXT + "\ntrain:\n  iterations: 5\n"
OVERRIDES = "model.overrides=" + json.dumps({"hidden_dim": 32, "nheads": 2, "dropout": "abc"})


def _metrics(num_val: str):
    return lambda f: ["metrics", "--data", str(f.data), "--predictions", str(f.predictions), "--out",
                      str(f.root / "m.json"), "--num-val", num_val]


def _prepared(f) -> None:
    summary = json.loads((f.root / "summary.json").read_text())
    assert summary["split_sizes"]["val"] == 0 and summary["split_sizes"]["train"] > 0, summary["split_sizes"]


CASES = {
    "iterations-not-an-integer": Case(_train("train.iterations=1.5"),
                                      "--set train.iterations: expected an integer, got 1.5"),
    "batch-size-a-float": Case(_train("train.batch_size=2.0"), "--set train.batch_size: expected an integer, got 2.0"),
    "lr-nan": Case(_train("train.lr=.nan"), "--set train.lr: expected a finite number, got nan"),
    "lr-infinite": Case(_train("train.lr=.inf"), "--set train.lr: expected a finite number, got inf"),
    "lr-text": Case(_train("train.lr=fast"), "--set train.lr: expected a finite number, got 'fast'"),
    "dropout-text": Case(_train(OVERRIDES), ("key 'model.overrides.dropout'", "expected a finite number, got 'abc'")),
    "overrides-unknown-key": Case(_train("model.overrides={bogus: 1}"), "'bogus' was unexpected"),
    "negative-num-val-images": Case(_train("data.num_val_images=-1"),
                                    "--set data.num_val_images: -1 is less than the minimum of 0"),
    "seed-a-boolean": Case(_train("seed=true"), "--set seed: expected an integer, got True"),
    "params-binary": Case(_train(params="params.yaml"), lambda f: f"{f.root / 'params.yaml'}: not UTF-8 text",
                          setup=_write("params.yaml", bytes(range(256)))),
    "params-latin-1": Case(_train(params="params.yaml"), lambda f: f"{f.root / 'params.yaml'}: not UTF-8 text",
                           setup=_write("params.yaml", "# Größe\n".encode("latin-1") + PARAMS.read_bytes())),
    "params-duplicate-section": Case(_train(params="params.yaml"), "key 'train' is written twice",
                                     setup=_write("params.yaml", DUPLICATE_SECTION.encode())),
    "params-missing": Case(_train(params="nothing.yaml"), "nothing.yaml: no such params file"),
    "launch-zero-ranks": Case(lambda f: ["launch", "--ranks-per-node", "0", "--", "true"],
                              "argument --ranks-per-node: must be at least 1, got 0"),
    "launch-zero-nodes": Case(lambda f: ["launch", "--nodes", "0", "--", "true"],
                              "argument --nodes: must be at least 1, got 0"),
    "stop-at-negative": Case(lambda f: [*_train()(f), "--stop-at", "-3"], "argument --stop-at: must be at least 1"),
    "evaluate-negative-iteration": Case(
        lambda f: ["evaluate", "--variant", "r101-detr", "--checkpoint", str(f.checkpoint), "--out",
                   str(f.root / "ev"), "--iteration", "-5", *demo_sets(f.data)],
        "argument --iteration: must be 0 or more, got -5"),
    "metrics-negative-num-val": Case(_metrics("-1"), "argument --num-val: must be 0 or more, got -1"),
    "metrics-num-val-text": Case(_metrics("many"), "argument --num-val: expected an integer, got 'many'"),
    "prepare-negative-num-val": Case(
        lambda f: ["data", "prepare", "--root", str(f.data), "--out", str(f.root / "summary.json"), "--num-val", "-2"],
        "argument --num-val: must be 0 or more, got -2"),
    "prepare-num-val-zero-is-fine": Case(
        lambda f: ["data", "prepare", "--root", str(f.data), "--out", str(f.root / "summary.json"), "--num-val", "0"],
        "", check=_prepared),
    "synth-zero-images": Case(lambda f: ["data", "synth", "--out", str(f.root / "synth"), "--images", "0"],
                              "argument --images: must be at least 1, got 0"),
}
