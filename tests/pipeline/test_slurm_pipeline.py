"""The demo DAG through `snakemake --profile slurm` against a real SLURM controller on localhost."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from pipeline_helpers import copy_run, make_tiny_project, run, with_venv
from slurm_cluster import LocalSlurm, accounting_available, slurm_available

from itersg.config import load_params
from itersg.workflow.paths import all_metrics, metrics_file, replicated_init, train_dir

pytestmark = [pytest.mark.slow, pytest.mark.slurm,
              pytest.mark.skipif(not slurm_available(), reason="needs slurm-wlm + munge and root (.ci/run installs)")]


# The profile's status polling suits a real cluster (20 s, growing); a test cluster answers at once.
FAST_POLLING = ["--slurm-init-seconds-before-status-checks", "2"]
# Without accounting (no slurmdbd) job states come from squeue, as on such sites.
SQUEUE_STATUS = ["--slurm-status-command", "squeue"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """As on most production clusters: accounting on (slurmdbd), so that `sacct` answers."""
    if not accounting_available():
        pytest.skip("needs slurmdbd + mariadb-server (.ci/run installs)")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"), accounting=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def slurm_demo(slurm, tmp_path_factory) -> Path:
    """The tiny demo run to its report by `snakemake --profile slurm`, job states polled with sacct (the
    plugin's default wherever the sacct binary exists). The other tests start from copies of it."""
    project = make_tiny_project(tmp_path_factory.mktemp("slurm-demo") / "project")
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["demo"]["study"]["eval_iterations"] = [16]  # one evaluated checkpoint (the local DAG tests run two)
    # the default warning (300 s before a 6-minute limit) could reach a training slowed down by a busy
    # machine, and a warned job ends FAILED and is resubmitted: here every job must complete at once
    raw["demo"].setdefault("slurm", {})["time_limit_warning_seconds"] = 30
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**slurm.env(), "ITERSG_SLURM_PARTITION": "debug"}
    run(["snakemake", "--profile", "slurm", *FAST_POLLING, "--slurm-status-command", "sacct"], project, env=env)
    return project


def test_snakemake_profile_slurm_runs_the_demo_to_the_report(slurm_demo, slurm):
    params = load_params(slurm_demo / "params.yaml")
    for path in all_metrics(params):
        assert json.loads((slurm_demo / path).read_text())["status"] == "ok"
    assert (slurm_demo / "reports/demo/report.html").is_file()
    # every job went through sbatch and its log was kept, and the accounting database saw each one finish
    job_logs = list((slurm_demo / "logs" / "slurm").rglob("*.log"))
    assert len(job_logs) >= 8
    accounted = subprocess.run(["sacct", "-X", "-n", "-P", "--format=JobIDRaw,State", "--starttime", "now-1days"],
                               env=slurm.env(), capture_output=True, text=True, check=True).stdout
    states = dict(line.split("|") for line in accounted.split())
    assert {log.stem for log in job_logs} <= {job for job, state in states.items() if state == "COMPLETED"}


def test_a_killed_training_job_resumes_from_its_checkpoint(slurm_demo, slurm, tmp_path):
    """Job states polled with squeue (as where there is no accounting): scancel mid-training of a longer run
    of one variant, the retry resumes."""
    tiny_project = copy_run(slurm_demo, tmp_path / "project")
    env = {**slurm.env(), "ITERSG_SLURM_PARTITION": "debug"}
    params_path = tiny_project / "params.yaml"
    raw = yaml.safe_load(params_path.read_text())
    raw["demo"]["train"].update(iterations=40, checkpoint_every=5)
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(tiny_project / "params.yaml")
    out = tiny_project / train_dir(params, "vovnet39-centermask")
    shutil.rmtree(out)  # the demo's run of it, checkpoints too
    target = f"{train_dir(params, 'vovnet39-centermask')}/model_final.pth"
    command = ["snakemake", "--profile", "slurm", *FAST_POLLING, *SQUEUE_STATUS, target]
    snakemake = subprocess.Popen(command, cwd=tiny_project, env=with_venv(env), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    pids: list[int] = []
    try:
        # the first checkpoint: the job, its Snakemake, srun and the rank start in a minute on a busy machine
        deadline = time.monotonic() + 600
        while not any((out / "checkpoints").glob("model_*.pth")):
            assert snakemake.poll() is None, snakemake.communicate()[0][-4000:]
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(1)
        # Pause the rank before cancelling, so that however fast it trains, the cancel finds it midway
        # (slurmstepd sends SIGCONT with SIGTERM).
        start = next(json.loads(line) for line in (out / "log.jsonl").read_text().splitlines())
        pids = [rank["pid"] for rank in start["ranks"]]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        # the plugin names jobs by run id; its log folder names the rule and holds <job id>.log
        train_jobs = [log.stem for log in (tiny_project / "logs" / "slurm" / "rule_train").rglob("*.log")]
        assert train_jobs, "no training job submitted"
        subprocess.run(["scancel", *train_jobs], env=env, check=True)
        output, _ = snakemake.communicate(timeout=900)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        snakemake.kill()
    assert snakemake.returncode == 0, output
    log = (tiny_project / "logs" / "demo" / "train" / "vovnet39-centermask.log").read_text()
    assert "resum" in log.lower(), log
    starts = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["event"] == "start"]
    assert len(starts) == 2 and 0 < starts[1]["iteration"] < 40


def test_a_variant_that_fails_for_good_is_reported_as_failed(slurm_demo, slurm, tmp_path):
    """r101-detr's initial weights turn out unusable: its training fails on every attempt, vovnet39-centermask
    keeps its metrics, and the report still comes, with r101-detr failed and why."""
    tiny_project = copy_run(slurm_demo, tmp_path / "project")
    env = {**slurm.env(), "ITERSG_SLURM_PARTITION": "debug"}
    params = load_params(tiny_project / "params.yaml")
    shutil.rmtree(tiny_project / train_dir(params, "r101-detr"))
    for iteration in params["study"]["eval_iterations"]:
        shutil.rmtree((tiny_project / metrics_file(params, "r101-detr", iteration)).parent)
    (tiny_project / "reports/demo/report.html").unlink()
    (tiny_project / replicated_init(params)).write_bytes(b"not a checkpoint")
    result = subprocess.run(["snakemake", "--profile", "slurm", *FAST_POLLING, *SQUEUE_STATUS, "--retries", "1"],
                            cwd=tiny_project, env=with_venv(env), capture_output=True, text=True, timeout=1500)
    assert result.returncode != 0  # the workflow did fail
    assert "evaluation(s) failed; the report shows them" in result.stdout + result.stderr
    train_jobs = list((tiny_project / "logs" / "slurm" / "rule_train" / "r101-detr").glob("*.log"))
    assert len(train_jobs) == 2  # the first attempt and its retry
    for iteration in params["study"]["eval_iterations"]:
        metrics = json.loads((tiny_project / metrics_file(params, "vovnet39-centermask", iteration)).read_text())
        assert metrics["status"] == "ok"
        assert not (tiny_project / metrics_file(params, "r101-detr", iteration)).exists()
    page = (tiny_project / "reports/demo/report.html").read_text()
    # every table of the report shows each r101-detr evaluation as failed, with the training's error
    failed_cells = re.findall(r'data-variant="([^"]+)" data-iteration="(\d+)" data-status="failed">failed: '
                              r"<code>([^<]*)<", page)
    assert {(variant, int(iteration)) for variant, iteration, _ in failed_cells} == {
        ("r101-detr", iteration) for iteration in params["study"]["eval_iterations"]}, page[:2000]
    assert all(reason.startswith("train failed: itersg: error:") and "r101-detr_init.pth" in reason
               for _, _, reason in failed_cells), failed_cells
    assert page.count('data-status="failed"') == len(failed_cells)
    for iteration in params["study"]["eval_iterations"]:  # the other variant's results are in the report
        assert f'data-variant="vovnet39-centermask" data-iteration="{iteration}" data-metric="R@50"' in page
