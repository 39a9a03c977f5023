"""`snakemake --profile slurm` on a two-node local cluster with count-only GPUs: a 2 nodes x 2 GPUs
training job is requested as intended, starts 4 ranks, meets its time limit both ways a job can (warned
first, and not warned) and resumes each time to the same weights as a 4-process run started by hand.

No step of it depends on the machine's speed: the test shortens each attempt's time limit only once the
ranks have logged training iterations, with the ranks paused (SIGSTOP) until SLURM's signal has reached
them, so that the training cannot finish first; the lost warning is sent while the retry is held in its
prolog (allocated, its clock running, none of its processes started)."""

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from pipeline_helpers import run, with_venv
from slurm_cluster import DEFAULT_CONF, LocalSlurm, slurm_available

from itersg.config import load_params
from itersg.workflow.paths import final_weights, train_dir

pytestmark = [pytest.mark.slow, pytest.mark.slurm,
              pytest.mark.skipif(not slurm_available(), reason="needs slurm-wlm + munge and root (.ci/run installs)")]

VARIANT = "vovnet39-detr"
ITERATIONS = 100
WARNING_SECONDS = 180
# Every attempt asks for startup_minutes + 1 = 15 minutes (runtime_growth 1), far more than it needs: the test
# itself brings the limit near, at a moment it chooses.
MULTI_NODE = {
    "train": {"gpus": 2, "nodes": 2, "device": "cpu", "iterations": ITERATIONS, "checkpoint_every": 1000,
              "val_every": 1000, "log_every": 10},
    "study": {"variants": [VARIANT], "eval_iterations": [ITERATIONS]},
    "slurm": {"cpus_per_rank": 1, "mem_mb_per_rank": 3000, "images_per_second_per_rank": 1000, "startup_minutes": 14,
              "runtime_growth": 1, "max_runtime_minutes": 15, "time_limit_warning_seconds": WARNING_SECONDS},
}
FAST_POLLING = ["--slurm-init-seconds-before-status-checks", "2", "--slurm-status-command", "squeue"]
# Bounds of the waits below. Starting an attempt (sbatch, the job's Snakemake, srun, 4 Python processes
# importing torch, the first 10 iterations) takes about a minute on a busy 2-core machine; slurmctld
# checks time limits and warnings every 30 s (PERIODIC_TIMEOUT), so a signal follows a new limit within
# a minute.
ATTEMPT_START_SECONDS = 600
SIGNAL_SECONDS = 120


@pytest.fixture
def two_nodes(tmp_path):
    cluster = LocalSlurm(tmp_path / "slurm", cpus=4, nodes=2, gpus_per_node=2)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()  # raises if a daemon it started is still running
    # nothing of ours left in /etc/slurm
    assert not (DEFAULT_CONF.is_symlink() and DEFAULT_CONF.readlink() == cluster.conf)
    for daemon in ("slurmctld", "slurmd"):
        assert subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode == 1, daemon


def _configure(project: Path, settings: dict) -> dict:
    path = project / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for section, values in settings.items():
        raw["demo"].setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(path)


def _job_fields(job_id: str, env: dict) -> dict[str, str]:
    text = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], env=env, capture_output=True,
                          text=True, check=True).stdout
    return dict(re.findall(r"(\S+?)=(\S*)", text))


def _records(out: Path) -> list[dict]:
    path = out / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _wait(condition: Callable[[], object], seconds: float, what: str, snakemake: subprocess.Popen):
    """Poll ``condition`` until it returns something true; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        if snakemake.poll() is not None:
            pytest.fail(f"snakemake exited {snakemake.returncode} while waiting for {what}:\n"
                        f"{snakemake.communicate()[0][-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {seconds} s")
        time.sleep(0.5)
    return value


def _seconds(duration: str) -> int:
    """SLURM's [D-]HH:MM:SS (or MM:SS) as seconds."""
    days, _, clock = duration.rpartition("-")
    seconds = 0
    for part in clock.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds + int(days or 0) * 86400


def _signal_ranks(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:  # it has already stopped and exited
            continue


def _shorten(job: str, env: dict, past: bool = False) -> None:
    """Set ``job``'s time limit so that 120-180 s are left (inside the warning window), or the end is up
    to 60 s ``past`` (the run time must be over a minute: a limit of 0 means none)."""
    elapsed = _seconds(_job_fields(job, env)["RunTime"])
    minutes = elapsed // 60 if past else elapsed // 60 + 3
    assert minutes >= 1
    subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={minutes}"], env=env, check=True)


def _meet_time_limit(job: str, out: Path, pids: list[int], warned_before: bool, env: dict,
                     snakemake: subprocess.Popen) -> dict:
    """Bring ``job``'s time limit near while its ranks are paused (SIGSTOP); the record of how they stopped.

    A job not ``warned_before`` gets a limit inside the warning window: SLURM sends SIGUSR1 with two minutes
    left. A job whose warning has gone (before its ranks existed) gets a limit already past: SLURM sends
    SIGTERM, and the ranks have KillWait to checkpoint. slurmstepd sends SIGCONT before either signal, so
    the ranks go on only once SLURM has signalled them, whatever this machine's speed.
    """
    stopped_before = sum(r["event"] == "preempted" for r in _records(out))
    _signal_ranks(pids, signal.SIGSTOP)
    try:
        if warned_before:  # the ranks are paused: let the run time pass a minute
            _wait(lambda: _seconds(_job_fields(job, env)["RunTime"]) >= 61, 90, "minute of run time", snakemake)
        _shorten(job, env, past=warned_before)
        stopped = _wait(lambda: [r for r in _records(out) if r["event"] == "preempted"][stopped_before:],
                        SIGNAL_SECONDS, "checkpoint after SLURM's signal", snakemake)
    finally:
        _signal_ranks(pids, signal.SIGCONT)  # whatever happened, leave no process stopped
    return stopped[0]


def _attempt(project: Path, out: Path, attempt: int, snakemake: subprocess.Popen) -> tuple[str, list[int]]:
    """Wait until attempt ``attempt``'s ranks have trained 10 iterations; its job id and rank pids."""
    def trained():
        records = _records(out)
        starts = [i for i, r in enumerate(records) if r["event"] == "start"]
        if len(starts) == attempt and any(r["event"] == "train" for r in records[starts[-1]:]):
            return records[starts[-1]]
        return None

    start = _wait(trained, ATTEMPT_START_SECONDS, f"training iterations of attempt {attempt}", snakemake)
    jobs = sorted((project / "logs" / "slurm" / "rule_train").rglob("*.log"), key=lambda p: int(p.stem))
    assert len(jobs) == attempt
    return jobs[-1].stem, [rank["pid"] for rank in start["ranks"]]


def test_two_node_training_meets_its_time_limit_warned_or_not_and_resumes(tiny_project, two_nodes, tmp_path):
    params = _configure(tiny_project, MULTI_NODE)
    env = {**two_nodes.env(), "ITERSG_SLURM_PARTITION": "debug"}
    weights = final_weights(params, VARIANT)
    out = tiny_project / train_dir(params, VARIANT)
    snakemake = subprocess.Popen(["snakemake", "--profile", "slurm", *FAST_POLLING, weights], cwd=tiny_project,
                                 env=with_venv(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Attempt 1 is warned while its ranks train.
        job, pids = _attempt(tiny_project, out, 1, snakemake)
        two_nodes.hold_job_starts()  # the retry will wait in its prolog
        stopped = _meet_time_limit(job, out, pids, False, env, snakemake)
        assert stopped["reason"] == "SIGUSR1", stopped
        # Attempt 2's warning goes while it waits in its prolog, before any of its steps exists: it is lost.
        retry = _wait(two_nodes.held_jobs, ATTEMPT_START_SECONDS, "retry waiting in its prolog", snakemake)[0]
        _shorten(retry, env)
        _wait(lambda: two_nodes.warned(retry), SIGNAL_SECONDS, "warning of the retry", snakemake)
        subprocess.run(["scontrol", "update", f"JobId={retry}", "TimeLimit=15"], env=env, check=True)
        two_nodes.release_job_starts()
        job, pids = _attempt(tiny_project, out, 2, snakemake)
        assert job == retry
        stopped = _meet_time_limit(job, out, pids, True, env, snakemake)  # so the time limit ends it
        assert stopped["reason"] == "SIGTERM", stopped
        output, _ = snakemake.communicate(timeout=ATTEMPT_START_SECONDS + 600)
    finally:
        two_nodes.release_job_starts()
        snakemake.kill()
    assert snakemake.returncode == 0, output[-4000:]

    # Three attempts, as sbatch was asked: 2 nodes, 2 tasks and 2 GPUs per node, 1 CPU per task, memory per node.
    job_logs = sorted((tiny_project / "logs" / "slurm" / "rule_train").rglob("*.log"), key=lambda p: int(p.stem))
    assert len(job_logs) == 3, output[-4000:]
    jobs = [_job_fields(log.stem, env) for log in job_logs]
    for job in jobs:
        assert (job["NumNodes"], job["NumTasks"], job["CPUs/Task"]) == ("2", "4", "1")
        assert job["NtasksPerN:B:S:C"].startswith("2:")
        assert job["TresPerNode"] == "gres:gpu:2"
        assert job["MinMemoryNode"] == "6000M"
        assert job["NodeList"] == "node[1-2]"
    assert jobs[2]["TimeLimit"] == "00:15:00"  # the attempt the test left alone
    # warned: the job's Snakemake reported the ranks' exit 75 and nothing was killed; not warned: TIMEOUT
    assert [job["JobState"] for job in jobs] == ["FAILED", "TIMEOUT", "COMPLETED"]
    assert jobs[0]["ExitCode"] == "1:0"

    records = _records(out)
    starts = [r for r in records if r["event"] == "start"]
    stopped = [r for r in records if r["event"] == "preempted"]
    assert len(starts) == 3 and len(stopped) == 2
    assert [(r["reason"], r["exit_status"]) for r in stopped] == [("SIGUSR1", 75), ("SIGTERM", 75)]
    # each attempt checkpointed where it was stopped and the next resumed exactly there
    assert 0 < stopped[0]["iteration"] < stopped[1]["iteration"] < ITERATIONS
    assert [s["iteration"] for s in starts] == [0, stopped[0]["iteration"], stopped[1]["iteration"]]
    for start in starts:
        ranks = sorted(start["ranks"], key=lambda r: r["rank"])
        assert [(r["rank"], r["local_rank"], r["node"]) for r in ranks] == [
            (0, 0, "node1"), (1, 1, "node1"), (2, 0, "node2"), (3, 1, "node2")]
        assert {r["world_size"] for r in ranks} == {4} and start["launcher"] == "slurm"
        # node1's address (slurm.conf NodeAddr), every rank the same rendezvous; GPUs visible as on a GPU node
        assert {(r["master_addr"], r["cuda_visible_devices"]) for r in ranks} == {("127.0.0.1", "0,1")}
    assert len({start["ranks"][0]["master_port"] for start in starts}) == 3  # a port per job

    # Only the ranks saw the warning: no Snakemake, shell or srun process died of it.
    # (A process killed by USR1 would show as "User defined signal 1" in the job's log, exit code 0:10.)
    first_job_log = job_logs[0].read_text()
    assert "Error in rule train" in first_job_log and "User defined signal" not in first_job_log, first_job_log

    # The same training as 4 processes started by hand, uninterrupted: bit-identical weights.
    by_hand = tmp_path / "by-hand"
    run(["torchrun", "--standalone", "--nproc-per-node=4", "--no-python", "itersg", "train", "--variant", VARIANT,
         "--out", str(by_hand), "--params", "params.yaml", "--set", "mode=demo"], tiny_project,
        env={**with_venv(), "OMP_NUM_THREADS": "1"})
    expected, got = _weights(by_hand / "model_final.pth"), _weights(tiny_project / weights)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
