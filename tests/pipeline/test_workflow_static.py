"""The workflow's wiring: lint-clean Snakemake, a dvc.yaml that agrees with it, profiles that resolve."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from itersg.config import load_params, stage_keys, variant_recipe
from itersg.workflow.dag import workflow_jobs
from itersg.workflow.dvc_stages import DVC_FILES, stale_dvc_files

ROOT = Path(__file__).resolve().parents[2]


def _snakemake(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("mode", ["full", "demo"])
def test_snakemake_lint_is_clean(mode):
    result = _snakemake("--lint", "--config", f"mode={mode}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


def test_full_dag_covers_every_variant_and_checkpoint():
    params = load_params(ROOT / "params.yaml")
    jobs = workflow_jobs(ROOT, "full")
    trained = sorted(job.wildcards["variant"] for job in jobs if job.rule == "train")
    evaluated = sorted((j.wildcards["variant"], int(j.wildcards["iteration"])) for j in jobs if j.rule == "evaluate")
    assert trained == sorted(params["study"]["variants"])
    # each variant at its own checkpoints where its recipe is its own (SpeaQ: the end of 150k iterations)
    assert evaluated == sorted((v, i) for v in trained for i in variant_recipe(params, v)["eval_iterations"])
    assert ("r101-detr-speaq", 150000) in evaluated and ("r101-detr-speaq-baseline", 150000) in evaluated
    assert ("r101-detr", 250000) in evaluated and ("r101-detr-speaq", 250000) not in evaluated
    # the SpeaQ variant's evaluation meets the published SpeaQ row in the report
    from itersg.report.tables import published_row, reference_rows

    assert published_row("r101-detr-speaq", 150000, reference_rows())["project"] == "SpeaQ (released checkpoint)"
    # the ResNet-101 variants start from the VG-pretrained DETR
    inputs = {job.wildcards["variant"]: job.inputs for job in jobs if job.rule == "train"}
    for variant in ("r101-detr", "r101-detr-speaq", "r101-detr-speaq-baseline"):
        assert "resources/weights/iterativesg_detr_vg.pth" in inputs[variant], variant
    assert "resources/weights/iterativesg_detr_vg.pth" not in inputs["vovnet39-detr"]
    # EGTR: evaluated at its recipe's end beside its published row, from EGTR's released Deformable DETR
    assert ("egtr-r50", 67650) in evaluated
    assert published_row("egtr-r50", 67650, reference_rows())["ref"] == "EGTR"
    assert "resources/weights/egtr_detr_vg.ckpt" in inputs["egtr-r50"]
    assert {job.rule for job in jobs} >= {"fetch_detr", "fetch_egtr_detr"}


def test_without_released_detectors_the_study_pretrains_both_detr_and_deformable_detr():
    jobs = workflow_jobs(ROOT, "full", {"detr_weights": {"source": "pretrain"}})
    inputs = {job.wildcards["variant"]: job.inputs for job in jobs if job.rule == "train"}
    assert "results/full/deformable_detr/model_final.pth" in inputs["egtr-r50"]
    assert "results/full/weights/r101-detr_init.pth" in inputs["r101-detr"]
    pretrain = next(job for job in jobs if job.rule == "pretrain_deformable_detr")
    assert pretrain.outputs == ["results/full/deformable_detr/model_final.pth"]
    assert "--variant egtr-r50" in pretrain.command
    assert not {"fetch_detr", "fetch_egtr_detr"} & {job.rule for job in jobs}


def test_committed_dvc_files_are_generated_from_the_workflow():
    params = load_params(ROOT / "params.yaml", ["mode=full"])
    assert stale_dvc_files(ROOT, params) == [], "run `itersg pipeline dvc`"


def _stages(mode: str) -> dict:
    return yaml.safe_load((ROOT / DVC_FILES[mode]).read_text())["stages"]


@pytest.mark.parametrize("mode", ["full", "demo"])
def test_dvc_stages_have_exactly_the_snakemake_inputs_and_outputs(mode):
    stages = _stages(mode)
    jobs = {job.stage_name: job for job in workflow_jobs(ROOT, mode)}
    assert set(stages) == set(jobs)
    for name, stage in stages.items():
        job = jobs[name]
        file_deps = [d for d in stage.get("deps", []) if not d.startswith("src/")]
        outs = stage.get("outs", []) + [next(iter(m)) for m in stage.get("metrics", [])]
        assert sorted(file_deps) == sorted(job.inputs), name
        assert sorted(outs) == sorted(job.outputs), name
        assert stage["cmd"].split()[:7] == ["itersg", "pipeline", "run", "--mode", mode, "--rule", job.rule]
        assert stage.get("wdir", ".") == ("." if mode == "full" else ".."), name


@pytest.mark.parametrize("mode", ["full", "demo"])
def test_variant_settings_are_params_of_only_that_variants_stages(mode):
    for name, stage in _stages(mode).items():
        keys = [p.removeprefix("demo.") for p in stage.get("params", [])]
        variant_keys = {p.split(".")[1] for p in keys if p.startswith("variants.")}
        if name.startswith(("train-", "evaluate-")):
            variant = name.split("-", 1)[1]
            assert len(variant_keys) == 1 and variant.startswith(variant_keys.pop()), name
        elif name == "report":  # which checkpoints each variant evaluates: the report's rows
            recipe = [p for p in keys if p.startswith("variants.")]
            assert all(p.endswith((".iterations", ".eval_iterations")) for p in recipe), recipe
        else:
            assert variant_keys == set(), name


def test_the_demo_stages_read_a_key_through_its_demo_override_only():
    train = _stages("demo")["train-r101-detr"]["params"]
    assert "demo.train.lr" in train and "train.lr" not in train
    assert "loss.class_weight" in train  # not overridden: the study's value
    assert "demo.model.overrides.hidden_dim" in train  # mappings merge: key by key


def test_training_stages_list_every_key_that_changes_training():
    """Keys declared through a `$ref` (the augmentation scales) included; keys of no stage excluded."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    train_keys = stage_keys("train")
    assert {"data.train_min_sizes", "data.crop_resize_sizes", "train.lr"} <= set(train_keys)
    assert not {"train.checkpoint_every", "train.checkpoint_minutes", "slurm.cpus_per_rank"} & set(train_keys)
    for name, stage in stages.items():
        if name.startswith("train-"):
            assert set(train_keys) <= set(stage["params"]), name


def test_slurm_profile_is_found_from_the_root_by_name():
    profile = ROOT / "slurm" / "config.yaml"
    assert profile.is_file(), "`snakemake --profile slurm` resolves ./slurm"
    config = yaml.safe_load(profile.read_text())
    assert config["executor"] == "slurm"
    assert config["slurm-keep-successful-logs"] is True
    assert (ROOT / "profiles" / "default" / "config.yaml").is_file()
    result = _snakemake("--profile", "slurm", "-n", "--config", "mode=demo")
    assert result.returncode == 0, result.stderr


def test_config_overrides_reach_every_itersg_command():
    """`--configfile` and `--config` change the workflow's params; each job's itersg command resolves the same."""
    import shlex

    from itersg.config import deep_merge, resolve_params

    result = _snakemake("-n", "-p", "--forceall", "--config", "mode=demo", "seed=7",
                        "--configfile", "demo/long.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    commands = [line.split("Shell command: ", 1)[1] for line in (result.stdout + result.stderr).splitlines()
                if line.startswith("Shell command: ") and "--params params.yaml" in line]
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    expected = resolve_params(deep_merge(raw, {**yaml.safe_load((ROOT / "demo/long.yaml").read_text()),
                                               "mode": "demo", "seed": 7}))
    assert expected["train"]["iterations"] == 2000 and expected["seed"] == 7
    rules = set()
    for command in commands:
        words = shlex.split(command.split(" > ")[0])
        rules.add(words[max(i for i, word in enumerate(words) if word == "itersg") + 1])
        start = words.index("--params")
        sets = [words[i + 1] for i in range(start, len(words) - 1) if words[i] == "--set"]
        resolved = load_params(ROOT / words[start + 1], sets)
        resolved.pop("demo"), expected.pop("demo", None)  # the overrides themselves, already applied
        assert resolved == expected, command
    assert {"train", "pretrain-detr", "evaluate", "report"} <= rules


def test_the_workflow_package_loads_no_torch_and_no_model_code():
    """What the Snakefile imports stays light: `snakemake -n` never waits for torch."""
    import pkgutil

    import itersg.workflow

    modules = [f"itersg.workflow.{m.name}" for m in pkgutil.iter_modules(itersg.workflow.__path__)]
    assert {"itersg.workflow.paths", "itersg.workflow.failures"} <= set(modules)
    code = (f"import sys; import {', '.join(modules)}; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('itersg.models', 'itersg.engine'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
