# Helpers shared by the rules: the resolved params and the paths of every output (itersg.workflow.paths).
import json
import os

import itersg.workflow.code_deps as code_deps
import itersg.workflow.paths as paths
import itersg.workflow.slurm as slurm
from itersg.config import for_pretraining, for_variant, resolve_params, stage_values
from snakemake.utils import validate


# Without set_default: filling defaults into `demo:` would make them overrides of the study's values.
validate(config, schema="../schemas/params.schema.yaml", set_default=False)
P = resolve_params(config)
MODE = P["mode"]
# Every itersg call sees the same params as this workflow, `--config` and `--configfile` overrides included.
ITERSG_ARGS = paths.itersg_args(MODE, workflow.config_settings.overwrite_config)


wildcard_constraints:
    variant="|".join(P["study"]["variants"]),
    iteration=r"\d+",


def settings_of(rule_name):
    """The values of every params key the rule's results depend on (its schema stage's keys). Listed as
    the rule's `params`, so that Snakemake reruns its jobs when one changes, as `dvc repro` does. As JSON
    with sorted keys: Snakemake compares the text, and a merged mapping's key order is not a change."""
    return json.dumps(stage_values(P, paths.params_stage(rule_name)), sort_keys=True)


def variant_settings(wildcards):
    """The variant's own settings (`variants.<name>`), listed like `settings_of` by its jobs only."""
    return json.dumps(P["variants"][wildcards.variant], sort_keys=True)


def log_path(rule_name, wildcard_part=""):
    return paths.log_file(P, rule_name, wildcard_part)


def benchmark_path(rule_name, wildcard_part=""):
    return f"benchmarks/{MODE}/{rule_name}/{wildcard_part or 'all'}.tsv"


def init_weights(wildcards):
    """Initial weights: the ResNet-101 variants (r101-detr and its SpeaQ versions) start from the
    VG-pretrained DETR, EGTR from its VG-pretrained Deformable DETR."""
    return paths.initial_weights(P, wildcards.variant)


def init_arg(wildcards, input):
    return f"--init {input.init}" if input.init else ""


# Training jobs: one process per GPU on each node, started by `itersg launch`; their SLURM request
# (nodes, tasks per node, GPUs per node, CPUs per process, memory, time-limit warning, runtime per
# attempt) comes from itersg.workflow.slurm.
LAUNCH = paths.NotASetting(f"itersg launch {slurm.launcher_args(P)} --")
TRAINING_RESOURCES = slurm.training_resources(P)


def runtime_of(stage):
    """Minutes per attempt: retries ask for more (the job resumes its checkpoint). Training jobs count
    their variant's own iterations and batch size."""
    if stage == "train":
        return lambda wildcards, attempt: slurm.training_runtime(for_variant(P, wildcards.variant), stage, attempt)
    return lambda wildcards, attempt: slurm.training_runtime(P, stage, attempt)


# CPU threads of each training or evaluation process (Snakemake sets OMP_NUM_THREADS to it). The demo
# uses one, so that Snakemake runs one job per core; small models use a core better in their own process
# than as a second thread of another job (docs/benchmarks.md).
JOB_THREADS = P["slurm"]["cpus_per_rank"]
