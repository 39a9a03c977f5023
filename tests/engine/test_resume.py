"""Resume: an interrupted and resumed run equals an uninterrupted one, bit for bit (CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from itersg.engine.checkpoint import list_checkpoints, load_checkpoint
from itersg.engine.runner import run_training
from itersg.engine.signals import EXIT_PREEMPTED


def _assert_tree_equal(a, b, where="") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_tree_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_tree_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _curves(out):
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    skip = ("time", "iter_per_s", "val/seconds")
    return [{k: v for k, v in r.items() if k not in skip} for r in records if r["event"] in ("train", "val")]


@pytest.fixture(scope="module")
def straight_and_resumed(tiny_params, tmp_path_factory):
    params = tiny_params()
    straight, resumed = tmp_path_factory.mktemp("straight"), tmp_path_factory.mktemp("resumed")
    assert run_training(params, "train", straight, variant="r101-detr") == 0
    assert run_training(params, "train", resumed, variant="r101-detr", stop_at=3) == EXIT_PREEMPTED
    assert not (resumed / "model_final.pth").exists()
    assert [it for it, _ in list_checkpoints(resumed / "checkpoints")] == [2, 3]
    assert run_training(params, "train", resumed, variant="r101-detr") == 0
    return params, straight, resumed


def test_resumed_run_is_bit_exact(straight_and_resumed):
    _, straight, resumed = straight_and_resumed
    a = load_checkpoint(straight / "checkpoints" / "model_0000006.pth")
    b = load_checkpoint(resumed / "checkpoints" / "model_0000006.pth")
    for part in ("model", "optimizer", "scheduler", "scaler", "rng", "running_means", "data_position"):
        _assert_tree_equal(a[part], b[part], part)
    final_a = load_checkpoint(straight / "model_final.pth")["model"]
    final_b = load_checkpoint(resumed / "model_final.pth")["model"]
    _assert_tree_equal(final_a, final_b, "model_final")
    initial = load_checkpoint(resumed / "checkpoints" / "model_0000003.pth")["model"]
    assert not all(torch.equal(initial[k], final_b[k]) for k in initial), "training must change the weights"


def test_resumed_run_logs_each_iteration_once_with_the_same_values(straight_and_resumed):
    _, straight, resumed = straight_and_resumed
    assert _curves(straight) == _curves(resumed)
    assert [r["iteration"] for r in _curves(resumed) if r["event"] == "train"] == [1, 2, 3, 4, 5, 6]
    loss_rows = (resumed / "dvclive" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in loss_rows] == ["step", "1", "2", "3", "4", "5", "6"]


def test_final_weights_and_kept_checkpoints(straight_and_resumed):
    params, straight, _ = straight_and_resumed
    final = load_checkpoint(straight / "model_final.pth")
    assert set(final) >= {"model", "variant", "iteration", "params"}
    assert final["variant"] == "r101-detr" and final["iteration"] == 6 and final["params"] == params
    # keep_last=1 plus the evaluated iteration 3
    assert [it for it, _ in list_checkpoints(straight / "checkpoints")] == [3, 6]
    assert (straight / "config_resolved.yaml").exists()


def test_finished_run_returns_at_once(straight_and_resumed):
    params, straight, _ = straight_and_resumed
    before = (straight / "model_final.pth").stat().st_mtime_ns
    assert run_training(params, "train", straight, variant="r101-detr") == 0
    assert (straight / "model_final.pth").stat().st_mtime_ns == before


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tiny_params, tmp_path):
    params = tiny_params("train.iterations=4", "train.keep_last=3")
    assert run_training(params, "train", tmp_path, variant="r101-detr", stop_at=3) == EXIT_PREEMPTED
    newest = tmp_path / "checkpoints" / "model_0000003.pth"
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        assert run_training(params, "train", tmp_path, variant="r101-detr") == 0
    starts = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in starts if r["event"] == "start"] == [0, 2]


def test_outputs_of_other_params_are_set_aside(tiny_params, tmp_path):
    first = tiny_params("train.iterations=2", "study.eval_iterations=[2]")
    assert run_training(first, "train", tmp_path, variant="r101-detr") == 0
    changed = tiny_params("train.iterations=2", "study.eval_iterations=[2]", "train.lr=0.002")
    with pytest.warns(UserWarning, match="moved to"), pytest.warns(UserWarning, match="written with other"):
        assert run_training(changed, "train", tmp_path, variant="r101-detr") == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("stale-")]
    assert len(aside) == 1
    assert (aside[0] / "checkpoints" / "model_0000002.pth").exists()
    assert load_checkpoint(aside[0] / "model_final.pth")["params"]["train"]["lr"] == first["train"]["lr"]
    assert load_checkpoint(tmp_path / "model_final.pth")["params"]["train"]["lr"] == 0.002


@pytest.mark.parametrize(("minutes", "expected"), [(0, [5]), (1e-6, [1, 2, 3, 4, 5])])
def test_checkpoints_on_a_wall_clock_timer(tiny_params, tmp_path, minutes, expected):
    """checkpoint_every=100 never comes due; a timer shorter than one iteration checkpoints every iteration."""
    params = tiny_params("train.iterations=5", "study.eval_iterations=[5]", "train.checkpoint_every=100",
                         f"train.checkpoint_minutes={minutes}")
    assert run_training(params, "train", tmp_path, variant="r101-detr") == 0
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["event"] == "checkpoint"] == expected
