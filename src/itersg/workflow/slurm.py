"""What the workflow's jobs ask SLURM for: the resources of each rule under ``snakemake --profile slurm``.

A training job (``train``, ``pretrain_detr``) runs ``train.gpus`` processes (ranks) on each of
``train.nodes`` nodes, one per GPU (one in all on the CPU when ``train.gpus`` is 0). Its sbatch
request, for G GPUs per node on N nodes with C = ``slurm.cpus_per_rank``::

    --nodes=N --ntasks-per-node=G --gres=gpu[:MODEL]:G --cpus-per-task=C --mem=<G x mem_mb_per_rank>
    --signal=USR1@<time_limit_warning_seconds> -t <minutes>

How the executor plugin (snakemake-executor-plugin-slurm 2.x, its jobstep plugin 0.6) is steered there:

* ``gres`` (per node), not ``gpu``: the plugin turns ``gpu`` into a job-wide ``--gpus=N`` total.
* No ``tasks`` on GPU jobs (the plugin turns it into ``--ntasks-per-gpu``); the task geometry is
  ``--ntasks-per-node`` in ``slurm_extra``. CPU jobs get ``tasks`` = all ranks, which the plugin
  passes as ``--ntasks`` (it adds ``--ntasks=1`` otherwise).
* ``mpi`` is present but empty. Its presence makes the jobstep plugin run the Snakemake job in the
  batch step itself instead of inside ``srun -n1``; the rule then starts the ranks with its own
  ``srun`` (``itersg launch``), so they form the only job step. ``--signal=USR1@T`` (without
  ``B:``) reaches the processes of job steps only, not the batch step: the ranks get the warning,
  while Snakemake, the job's shell and ``srun`` itself never see it. The empty value keeps the
  submitting plugin's MPI checks (which refuse one task per node) out of the way.

Runtime requests: ``startup_minutes`` plus the training images divided by the expected throughput
(``images_per_second_per_rank`` x ranks), grown by ``runtime_growth`` per retry and capped by
``ITERSG_SLURM_MAX_RUNTIME`` or ``slurm.max_runtime_minutes``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from itersg.errors import UserError

MAX_RUNTIME_ENV = "ITERSG_SLURM_MAX_RUNTIME"
GPU_MODEL_ENV = "ITERSG_SLURM_GPU_MODEL"


def ranks_per_node(params: Mapping[str, Any]) -> int:
    """Training processes per node: one per GPU, or one CPU process when ``train.gpus`` is 0."""
    return max(1, params["train"]["gpus"])


def training_images(params: Mapping[str, Any], stage: str) -> int:
    """Images a training stage processes: iterations x global batch."""
    if stage == "pretrain_detr":
        weights = params["detr_weights"]
        return weights["pretrain_iterations"] * weights["pretrain_batch_size"]
    return params["train"]["iterations"] * params["train"]["batch_size"]


def max_runtime(params: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> int:
    """The cap of every runtime request in minutes: ``ITERSG_SLURM_MAX_RUNTIME`` or the params key."""
    env = os.environ if environ is None else environ
    value = env.get(MAX_RUNTIME_ENV, "").strip()
    if not value:
        return params["slurm"]["max_runtime_minutes"]
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{MAX_RUNTIME_ENV}={value!r}: expected a whole number of minutes (at least 1)")
    return int(value)


def training_runtime(params: Mapping[str, Any], stage: str, attempt: int,
                     environ: Mapping[str, str] | None = None) -> int:
    """Minutes requested by ``attempt`` (1, 2, ...) of a training stage."""
    slurm = params["slurm"]
    ranks = ranks_per_node(params) * params["train"]["nodes"]
    seconds = training_images(params, stage) / (slurm["images_per_second_per_rank"] * ranks)
    first = slurm["startup_minutes"] + math.ceil(seconds / 60)
    return min(math.ceil(first * slurm["runtime_growth"] ** (attempt - 1)), max_runtime(params, environ))


def gpu_model(environ: Mapping[str, str] | None = None) -> str:
    """The GPU model of GPU requests (``ITERSG_SLURM_GPU_MODEL``, e.g. ``a100``); empty: any GPU."""
    env = os.environ if environ is None else environ
    return env.get(GPU_MODEL_ENV, "").strip()


def training_resources(params: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Snakemake resources of a training job, except ``runtime`` (see the module docstring)."""
    gpus, nodes = params["train"]["gpus"], params["train"]["nodes"]
    ranks = ranks_per_node(params)
    slurm = params["slurm"]
    extra = f"--ntasks-per-node={ranks} --signal=USR1@{slurm['time_limit_warning_seconds']}"
    resources: dict[str, Any] = {
        "nodes": nodes,
        "mpi": "",
        "cpus_per_task": slurm["cpus_per_rank"],
        "mem_mb": slurm["mem_mb_per_rank"] * ranks,
        "slurm_extra": extra,
    }
    if gpus:
        model = gpu_model(environ)
        resources["gres"] = f"gpu:{model}:{gpus}" if model else f"gpu:{gpus}"
    else:
        resources["tasks"] = ranks * nodes
    return resources


def launcher_args(params: Mapping[str, Any]) -> str:
    """The ``itersg launch`` options that start a training stage's ranks (see ``engine.launch``)."""
    return (f"--nodes {params['train']['nodes']} --ranks-per-node {ranks_per_node(params)} "
            f"--cpus-per-rank {params['slurm']['cpus_per_rank']}")
