"""`srun` launches two training tasks (gloo) on a real local SLURM cluster; SIGUSR1 preempts, a rerun resumes."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from itersg.engine.signals import EXIT_PREEMPTED

TESTS = Path(__file__).resolve().parents[1]
PARAMS = TESTS.parent / "params.yaml"


def _slurm_module():
    spec = importlib.util.spec_from_file_location("itersg_test_slurm_cluster", TESTS / "pipeline" / "slurm_cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def slurm(tmp_path):
    module = _slurm_module()
    if not module.slurm_available():
        pytest.skip("needs slurmctld/slurmd/munged and root")
    cluster = module.LocalSlurm(tmp_path / "slurm", cpus=4)
    cluster.start()
    yield cluster
    cluster.stop()


def _train_records(out: Path) -> list[dict]:
    log = out / "log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.slurm
def test_srun_two_tasks_preempted_by_usr1_then_resumed(slurm, tiny_sets, tmp_path):
    out = tmp_path / "run"
    sets = tiny_sets("train.iterations=30", "train.checkpoint_every=100", "study.eval_iterations=[30]")
    command = ["srun", "-n", "2", "--kill-on-bad-exit=1", "--job-name", "itersg-engine-test", sys.executable, "-m",
               "itersg", "train", "--variant", "r101-detr", "--out", str(out), "--params", str(PARAMS),
               *(arg for s in sets for arg in ("--set", s))]
    env = {**slurm.env(), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Started: wait up to 5 minutes (a few seconds on an idle machine) for the ranks' second iteration.
    deadline = time.monotonic() + 300
    while not any(r["event"] == "train" and r["iteration"] >= 2 for r in _train_records(out)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)
    # Pause the ranks while the signal travels (scancel -> slurmctld -> slurmd -> ranks), so that however fast
    # this machine trains, the signal finds them before iteration 30; let them go once it has arrived (or
    # once they stopped: slurmstepd may send SIGCONT with it).
    pids = [rank["pid"] for rank in _train_records(out)[0]["ranks"]]
    pending = _slurm_module().signal_pending
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        subprocess.run(["scancel", "--signal=USR1", "--name", "itersg-engine-test"], env=env, check=True)
        deadline = time.monotonic() + 60
        while not (all(pending(pid, signal.SIGUSR1) for pid in pids) or process.poll() is not None):
            assert time.monotonic() < deadline, "SIGUSR1 never reached the ranks"
            time.sleep(0.2)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == EXIT_PREEMPTED, stderr
    assert "received SIGUSR1" in stderr
    start = _train_records(out)[0]
    assert start["launcher"] == "slurm" and start["world_size"] == 2
    stopped = _train_records(out)[-1]
    assert stopped["event"] == "preempted" and stopped["iteration"] < 30

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "model_final.pth").exists()
    starts = [r for r in _train_records(out) if r["event"] == "start"]
    assert [r["iteration"] for r in starts] == [0, stopped["iteration"]]
