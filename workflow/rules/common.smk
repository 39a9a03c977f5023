# Helpers shared by the rules: the resolved params and the paths of every output (itersg.pipeline).
import os

import itersg.pipeline as paths
from itersg.config import resolve_params
from snakemake.utils import validate


validate(config, schema="../schemas/params.schema.yaml")
P = resolve_params(config)
MODE = P["mode"]
# Every itersg call sees the same params as this workflow (including a `--config mode=...` override).
ITERSG_ARGS = f"--params params.yaml --set mode={MODE}"


wildcard_constraints:
    variant="|".join(P["study"]["variants"]),
    iteration=r"\d+",


def log_path(rule_name, wildcard_part=""):
    return f"logs/{MODE}/{rule_name}/{wildcard_part or 'all'}.log"


def benchmark_path(rule_name, wildcard_part=""):
    return f"benchmarks/{MODE}/{rule_name}/{wildcard_part or 'all'}.tsv"


def init_weights(wildcards):
    """IterativeSG initial weights: only r101-detr starts from the VG-pretrained DETR."""
    if wildcards.variant != "r101-detr":
        return []
    if P["detr_weights"]["source"] == "released":
        return [paths.released_detr(P)]
    return [paths.replicated_init(P)]


def init_arg(wildcards, input):
    return f"--init {input.init}" if input.init else ""


def train_launcher(gpus, nodes):
    """Command prefix that starts one process per GPU inside the job's allocation."""
    if nodes > 1:
        return "srun --kill-on-bad-exit=1"
    if gpus > 1:
        return f"torchrun --standalone --nproc-per-node {gpus} --no-python"
    return ""


# CPU threads of a training or evaluation job. With GPUs: data loading and the host side of 4 GPUs' work.
# Without (the demo): one, so that Snakemake runs one job per core; small models use a core better in
# their own process than as a second thread of another job (docs/benchmarks.md).
JOB_THREADS = 4 if P["train"]["gpus"] else 1


def train_runtime(wildcards, attempt):
    """Minutes per attempt: retries after a timeout get longer (the job resumes its checkpoint)."""
    hours_per_10k = 3 if P["train"]["gpus"] else 1
    base = max(30, 60 * hours_per_10k * P["train"]["iterations"] // 10_000)
    return min(base * attempt, 3 * 24 * 60)
