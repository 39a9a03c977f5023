"""What the training jobs ask SLURM for, as the executor plugin's own code turns the rules' resources into sbatch
options, and how `itersg launch` starts the ranks."""

import shlex
from types import SimpleNamespace

import pytest
from pipeline_helpers import ROOT
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string
from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

from itersg.config import load_params
from itersg.engine.launch import launch_command
from itersg.errors import UserError
from itersg.workflow import slurm


class Resources(dict):
    """Snakemake's job resources as the plugin reads them: ``.get(name)`` and attributes."""

    __getattr__ = dict.__getitem__


def _sbatch_options(params: dict, attempt: int = 1, environ: dict | None = None) -> list[str]:
    resources = Resources(slurm.training_resources(params, environ or {}),
                          runtime=slurm.training_runtime(params, "train", attempt, environ or {}))
    job = SimpleNamespace(resources=resources, threads=1)
    validate_slurm_extra(job)
    submit = {"run_uuid": "run", "slurm_logfile": "log", "comment_str": "rule_train", "account": "", "partition": "",
              "workdir": ""}
    return shlex.split(get_submit_command(job, submit) + set_gres_string(job))


def _params(*assignments: str) -> dict:
    return load_params(ROOT / "params.yaml", list(assignments))


def test_four_gpus_on_one_node():
    options = _sbatch_options(_params())
    assert {"--nodes=1", "--ntasks-per-node=4", "--gres=gpu:4", "--cpus-per-task=6", "--signal=USR1@300"} \
        <= set(options)
    assert options[options.index("--mem") + 1] == str(4 * 24000)  # per node
    # never a job-wide GPU total or a task count per GPU (the plugin's `gpu` and `tasks` resources)
    assert not [o for o in options if o.startswith(("--gpus", "--ntasks-per-gpu", "--ntasks="))]


def test_two_nodes_of_two_gpus_of_a_model():
    options = _sbatch_options(_params("train.gpus=2", "train.nodes=2"), environ={"ITERSG_SLURM_GPU_MODEL": "a100"})
    assert {"--nodes=2", "--ntasks-per-node=2", "--gres=gpu:a100:2"} <= set(options)
    assert options[options.index("--mem") + 1] == str(2 * 24000)


def test_cpu_training_asks_for_its_tasks():
    options = _sbatch_options(_params("mode=demo"))
    assert {"--nodes=1", "--ntasks=1", "--ntasks-per-node=1", "--cpus-per-task=1"} <= set(options)
    assert not [o for o in options if o.startswith(("--gres", "--gpus"))]


def test_runtime_grows_per_attempt_up_to_the_cap():
    params = _params()
    # 250,000 iterations x 12 images / (40 images/s x 4 GPUs) = 18,750 s = 313 minutes, + 15 of start-up
    assert [slurm.training_runtime(params, "train", a, {}) for a in (1, 2, 3, 4, 5)] == [328, 492, 738, 1107, 1661]
    assert slurm.training_runtime(params, "train", 9, {}) == 2880
    assert slurm.training_runtime(params, "train", 2, {"ITERSG_SLURM_MAX_RUNTIME": "400"}) == 400
    # DETR pretraining is sized from its own iterations and batch: 554,400 x 16 / 160 = 55,440 s = 924 min
    assert slurm.training_runtime(params, "pretrain_detr", 1, {}) == 939
    with pytest.raises(UserError, match="ITERSG_SLURM_MAX_RUNTIME='2h'"):
        slurm.training_runtime(params, "train", 1, {"ITERSG_SLURM_MAX_RUNTIME": "2h"})


def test_ranks_run_in_their_own_job_step():
    """The jobstep plugin runs a job with an `mpi` resource in the batch step, not inside `srun -n1`."""
    assert "mpi" in slurm.training_resources(_params())


def test_launcher_inside_a_batch_script_starts_a_job_step():
    command = launch_command(["itersg", "train"], nodes=2, ranks_per_node=4, cpus_per_rank=6,
                             environ={"SLURM_JOB_ID": "7"})
    assert command == ["srun", "--nodes=2", "--ntasks-per-node=4", "--ntasks=8", "--cpus-per-task=6",
                       "--kill-on-bad-exit=1", "itersg", "train"]


def test_launcher_inside_a_job_step_or_without_slurm():
    step = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0"}
    assert launch_command(["itersg"], 1, 4, 6, step)[:3] == ["torchrun", "--standalone", "--nproc-per-node=4"]
    assert launch_command(["itersg", "train"], 1, 1, 6, {}) == ["itersg", "train"]
    with pytest.raises(UserError, match=r"train\.nodes=2 needs a SLURM allocation"):
        launch_command(["itersg"], 2, 1, 6, {})


def test_speaq_jobs_are_sized_by_their_own_recipe():
    from itersg.config import for_variant
    from itersg.engine.sampler import per_rank_batch

    params = for_variant(_params(), "r101-detr-speaq")
    # 150,000 iterations x 20 images / (40 images/s x 4 GPUs) = 18,750 s = 313 minutes, + 15: as r101-detr's
    # 250,000 x 12, by coincidence; half the iterations, half the time
    assert slurm.training_runtime(params, "train", 1, {}) == 328
    half = for_variant(_params("variants.r101-detr-speaq.iterations=75000",
                               "variants.r101-detr-speaq.eval_iterations=[75000]"), "r101-detr-speaq")
    assert slurm.training_runtime(half, "train", 1, {}) == 15 + 157
    assert per_rank_batch(params["train"]["batch_size"], 4) == 5  # batch 20 on the 4 GPUs of a job
    options = _sbatch_options(params)
    assert "--gres=gpu:4" in options and "-t 328" in " ".join(options)
