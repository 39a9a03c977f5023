"""`itersg train` / `itersg pretrain-detr` end to end, and a real SIGTERM in the middle of a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from itersg.cli import main
from itersg.engine.signals import EXIT_PREEMPTED

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _cli_args(sets: list[str]) -> list[str]:
    return ["--params", str(PARAMS), *(arg for s in sets for arg in ("--set", s))]


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_train_cli_writes_the_run_folder(tiny_sets, tmp_path):
    out = tmp_path / "run"
    status = main(["train", "--variant", "r101-detr", "--out", str(out), *_cli_args(tiny_sets())])
    assert status == 0
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["variant"] == "r101-detr" and final["iteration"] == 6
    resolved = yaml.safe_load((out / "config_resolved.yaml").read_text())
    assert resolved["train"]["iterations"] == 6 and resolved["mode"] == "demo"
    events = [r["event"] for r in _records(out)]
    assert events[0] == "start" and events[-1] == "finished" and "val" in events
    val = next(r for r in _records(out) if r["event"] == "val")
    assert {"val/loss", "val/R@50", "val/mR@50"} <= val.keys()
    curves = out / "dvclive" / "plots" / "metrics"
    for name in ("loss.tsv", "lr_rest.tsv", "lr_backbone.tsv", "val/loss.tsv", "val/R@50.tsv", "val/mR@50.tsv"):
        assert (curves / name).exists(), name
    assert json.loads((out / "dvclive" / "metrics.json").read_text())["step"] == 6


def test_pretrain_detr_cli(tiny_sets, tmp_path):
    out = tmp_path / "detr"
    sets = tiny_sets("detr_weights.pretrain_iterations=3", "detr_weights.pretrain_batch_size=2")
    assert main(["pretrain-detr", "--out", str(out), *_cli_args(sets)]) == 0
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["stage"] == "pretrain_detr" and final["iteration"] == 3
    assert any(k.startswith("transformer.decoder.layers.") for k in final["model"])


def test_unknown_variant_is_a_user_error(tiny_sets, tmp_path, capsys):
    status = main(["train", "--variant", "r999-detr", "--out", str(tmp_path), *_cli_args(tiny_sets())])
    assert status == 2
    assert "unknown variant 'r999-detr'" in capsys.readouterr().err


def _wait_for_iteration(out: Path, iteration: int, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        log = out / "log.jsonl"
        if log.exists() and any(r.get("iteration", 0) >= iteration for r in _records(out) if r["event"] == "train"):
            return
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"no iteration {iteration} within {timeout}s")


def test_sigterm_checkpoints_and_a_rerun_resumes(tiny_sets, tmp_path):
    out = tmp_path / "run"
    sets = tiny_sets("train.iterations=40", "train.checkpoint_every=100", "study.eval_iterations=[40]")
    command = [sys.executable, "-m", "itersg", "train", "--variant", "r101-detr", "--out", str(out), *_cli_args(sets)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    _wait_for_iteration(out, 2, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == EXIT_PREEMPTED, stderr
    assert "received SIGTERM" in stderr
    checkpoints = sorted((out / "checkpoints").glob("model_*.pth"))
    assert len(checkpoints) == 1 and not (out / "model_final.pth").exists()
    stopped_at = torch.load(checkpoints[0], weights_only=True)["iteration"]
    assert 2 <= stopped_at < 40
    assert _records(out)[-1] == {**_records(out)[-1], "event": "preempted", "iteration": stopped_at}

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert rerun.returncode == 0, rerun.stderr
    assert f"iteration {stopped_at}" in rerun.stdout
    starts = [r for r in _records(out) if r["event"] == "start"]
    assert [r["iteration"] for r in starts] == [0, stopped_at] and starts[1]["resumed"]
    assert [r["iteration"] for r in _records(out) if r["event"] == "train"] == list(range(1, 41))
