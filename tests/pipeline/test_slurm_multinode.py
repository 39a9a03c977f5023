"""`snakemake --profile slurm` on a two-node local cluster with count-only GPUs: a 2 nodes x 2 GPUs
training job is requested as intended, starts 4 ranks, survives its time-limit warning and resumes to
the same weights as a 4-process run started by hand."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from pipeline_helpers import run, with_venv
from slurm_cluster import DEFAULT_CONF, LocalSlurm, slurm_available

from itersg.config import load_params
from itersg.pipeline import final_weights, train_dir

pytestmark = [pytest.mark.slow, pytest.mark.slurm,
              pytest.mark.skipif(not slurm_available(), reason="needs slurm-wlm + munge and root (.ci/run installs)")]

VARIANT = "vovnet39-detr"
ITERATIONS = 600
# Attempt 1 asks for startup_minutes + 1 minute (the images at this rate take under a minute) = 2 minutes
# and is warned 90 s before its limit; attempt 2 asks for 3 x 2 = 6 minutes and finishes.
MULTI_NODE = {
    "train": {"gpus": 2, "nodes": 2, "device": "cpu", "iterations": ITERATIONS, "checkpoint_every": 1000,
              "val_every": 1000, "log_every": 20},
    "study": {"variants": [VARIANT], "eval_iterations": [ITERATIONS]},
    "slurm": {"cpus_per_rank": 1, "mem_mb_per_rank": 3000, "images_per_second_per_rank": 1000, "startup_minutes": 1,
              "runtime_growth": 3, "max_runtime_minutes": 10, "time_limit_warning_seconds": 90},
}
FAST_POLLING = ["--slurm-init-seconds-before-status-checks", "2", "--slurm-status-command", "squeue"]


@pytest.fixture
def two_nodes(tmp_path):
    cluster = LocalSlurm(tmp_path / "slurm", cpus=4, nodes=2, gpus_per_node=2)
    linked_before = DEFAULT_CONF.is_symlink()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()  # raises if a daemon it started is still running
    assert DEFAULT_CONF.is_symlink() == linked_before  # nothing of ours left in /etc/slurm
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
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_two_node_training_is_warned_before_its_time_limit_and_resumes(tiny_project, two_nodes, tmp_path):
    params = _configure(tiny_project, MULTI_NODE)
    env = {**two_nodes.env(), "ITERSG_SLURM_PARTITION": "debug"}
    weights = final_weights(params, VARIANT)
    result = run(["snakemake", "--profile", "slurm", *FAST_POLLING, weights], tiny_project, env=env, timeout=1200)

    # Two attempts, as sbatch was asked: 2 nodes, 2 tasks and 2 GPUs per node, 1 CPU per task, memory per node.
    job_logs = sorted((tiny_project / "logs" / "slurm" / "rule_train").rglob("*.log"), key=lambda p: int(p.stem))
    assert len(job_logs) == 2, result.stderr
    jobs = [_job_fields(log.stem, env) for log in job_logs]
    for job in jobs:
        assert (job["NumNodes"], job["NumTasks"], job["CPUs/Task"]) == ("2", "4", "1")
        assert job["NtasksPerN:B:S:C"].startswith("2:")
        assert job["TresPerNode"] == "gres:gpu:2"
        assert job["MinMemoryNode"] == "6000M"
        assert job["NodeList"] == "node[1-2]"
    assert [job["TimeLimit"] for job in jobs] == ["00:02:00", "00:06:00"]
    assert [job["JobState"] for job in jobs] == ["FAILED", "COMPLETED"]
    assert jobs[0]["ExitCode"] == "1:0"  # the job's Snakemake reported the ranks' exit 75; nothing was killed

    out = tiny_project / train_dir(params, VARIANT)
    records = _records(out)
    starts = [r for r in records if r["event"] == "start"]
    stopped = [r for r in records if r["event"] == "preempted"]
    assert len(starts) == 2 and len(stopped) == 1
    assert stopped[0]["reason"] == "SIGUSR1" and 0 < stopped[0]["iteration"] < ITERATIONS
    assert starts[1]["iteration"] == stopped[0]["iteration"]
    for start in starts:
        ranks = sorted(start["ranks"], key=lambda r: r["rank"])
        assert [(r["rank"], r["local_rank"], r["node"]) for r in ranks] == [
            (0, 0, "node1"), (1, 1, "node1"), (2, 0, "node2"), (3, 1, "node2")]
        assert {r["world_size"] for r in ranks} == {4} and start["launcher"] == "slurm"
        # node1's address (slurm.conf NodeAddr), every rank the same rendezvous; GPUs visible as on a GPU node
        assert {(r["master_addr"], r["cuda_visible_devices"]) for r in ranks} == {("127.0.0.1", "0,1")}
    assert len({start["ranks"][0]["master_port"] for start in starts}) == 2  # a port per job

    # Only the ranks saw the warning: no Snakemake, shell or srun process died of it.
    # (A process killed by USR1 would show as "User defined signal 1" in the job's log, exit code 0:10.)
    first_job_log = job_logs[0].read_text()
    assert "Error in rule train" in first_job_log and "User defined signal" not in first_job_log, first_job_log
    assert stopped[0]["exit_status"] == 75

    # The same training as 4 processes started by hand, uninterrupted: bit-identical weights.
    by_hand = tmp_path / "by-hand"
    run(["torchrun", "--standalone", "--nproc-per-node=4", "--no-python", "itersg", "train", "--variant", VARIANT,
         "--out", str(by_hand), "--params", "params.yaml", "--set", "mode=demo"], tiny_project,
        env={**with_venv(), "OMP_NUM_THREADS": "1"})
    expected, got = _weights(by_hand / "model_final.pth"), _weights(tiny_project / weights)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
