"""The demo DAG through `snakemake --profile slurm` against a real SLURM controller on localhost."""

import json
import re
import subprocess
import time

import pytest
import yaml
from pipeline_helpers import run, with_venv
from slurm_cluster import LocalSlurm, accounting_available, slurm_available

from itersg.config import load_params
from itersg.pipeline import all_metrics, metrics_file, replicated_init, train_dir

pytestmark = [pytest.mark.slow, pytest.mark.slurm,
              pytest.mark.skipif(not slurm_available(), reason="needs slurm-wlm + munge and root (.ci/run installs)")]


# The profile's status polling suits a real cluster (20 s, growing); a test cluster answers at once.
FAST_POLLING = ["--slurm-init-seconds-before-status-checks", "2"]
# Without accounting (no slurmdbd) job states come from squeue, as on such sites.
SQUEUE_STATUS = ["--slurm-status-command", "squeue"]


@pytest.fixture
def slurm(tmp_path):
    cluster = LocalSlurm(tmp_path / "slurm")
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def slurm_with_accounting(tmp_path):
    if not accounting_available():
        pytest.skip("needs slurmdbd + mariadb-server (.ci/run installs)")
    cluster = LocalSlurm(tmp_path / "slurm", accounting=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_snakemake_profile_slurm_runs_the_demo_to_the_report(tiny_project, slurm_with_accounting):
    """As on most production clusters: accounting on, job states polled with sacct (the plugin's default
    wherever the sacct binary exists)."""
    slurm = slurm_with_accounting
    env = {**slurm.env(), "ITERSG_SLURM_PARTITION": "debug"}
    run(["snakemake", "--profile", "slurm", *FAST_POLLING, "--slurm-status-command", "sacct"], tiny_project, env=env)
    params = load_params(tiny_project / "params.yaml")
    for path in all_metrics(params):
        assert json.loads((tiny_project / path).read_text())["status"] == "ok"
    assert (tiny_project / "reports/demo/report.html").is_file()
    # every job went through sbatch and its log was kept, and the accounting database saw each one finish
    job_logs = list((tiny_project / "logs" / "slurm").rglob("*.log"))
    assert len(job_logs) >= 8
    accounted = subprocess.run(["sacct", "-X", "-n", "-P", "--format=JobIDRaw,State", "--starttime", "now-1days"],
                               env=slurm.env(), capture_output=True, text=True, check=True).stdout
    states = dict(line.split("|") for line in accounted.split())
    assert {log.stem for log in job_logs} <= {job for job, state in states.items() if state == "COMPLETED"}


def test_a_killed_training_job_resumes_from_its_checkpoint(tiny_project, slurm):
    """On a cluster without accounting (squeue polling): scancel mid-training, the retry resumes."""
    env = {**slurm.env(), "ITERSG_SLURM_PARTITION": "debug"}
    params_path = tiny_project / "params.yaml"
    raw = yaml.safe_load(params_path.read_text())
    raw["demo"]["train"].update(iterations=300, checkpoint_every=5)  # long enough to be cancelled midway
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(tiny_project / "params.yaml")
    target = f"{train_dir(params, 'vovnet39-centermask')}/model_final.pth"
    checkpoints = tiny_project / train_dir(params, "vovnet39-centermask") / "checkpoints"
    command = ["snakemake", "--profile", "slurm", *FAST_POLLING, *SQUEUE_STATUS, target]
    snakemake = subprocess.Popen(command, cwd=tiny_project, env=with_venv(env), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        while not any(checkpoints.glob("model_*.pth")) and time.monotonic() < deadline:
            time.sleep(1)
        assert any(checkpoints.glob("model_*.pth")), "no checkpoint written"
        # the plugin names jobs by run id; its log folder names the rule and holds <job id>.log
        train_jobs = [log.stem for log in (tiny_project / "logs" / "slurm" / "rule_train").rglob("*.log")]
        assert train_jobs, "no training job submitted"
        subprocess.run(["scancel", *train_jobs], env=env, check=True)
        output, _ = snakemake.communicate(timeout=900)
    finally:
        snakemake.kill()
    assert snakemake.returncode == 0, output
    log = (tiny_project / "logs" / "demo" / "train" / "vovnet39-centermask.log").read_text()
    assert "resum" in log.lower(), log


def test_a_variant_that_fails_for_good_is_reported_as_failed(tiny_project, slurm):
    """r101-detr's initial weights are unusable: its training fails on every attempt, vovnet39-centermask
    goes on to its metrics, and the report still comes, with r101-detr failed and why."""
    env = {**slurm.env(), "ITERSG_SLURM_PARTITION": "debug"}
    params = load_params(tiny_project / "params.yaml")
    init = tiny_project / replicated_init(params)
    run(["snakemake", "--profile", "slurm", *FAST_POLLING, *SQUEUE_STATUS, str(init.relative_to(tiny_project))],
        tiny_project, env=env)
    init.write_bytes(b"not a checkpoint")
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
