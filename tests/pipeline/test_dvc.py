"""DVC over the Snakemake DAG: commit after snakemake, and, for every key of the params schema, the exact
stages DVC and Snakemake want to rerun after it changes (`dvc repro` itself: test_dvc_repro.py)."""

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipeline_helpers import DEMO_DVC, make_tiny_project, ran_stages, run

from itersg.config import RECIPE_KEYS, load_params, params_schema, resolve_params, variant_recipe
from itersg.errors import UserError
from itersg.workflow.code_deps import ImportGraph
from itersg.workflow.dag import changed_jobs, rerun_reasons, workflow_jobs
from itersg.workflow.dvc_stages import DVC_FILES, dvc_yaml
from itersg.workflow.paths import params_stage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def committed_demo(tmp_path_factory) -> Path:
    """A tiny demo run by Snakemake, then taken over by DVC (`dvc commit`). Every Python process of the run
    writes the modules it imports to its stderr, so to its job's log (``-X importtime``)."""
    project = make_tiny_project(tmp_path_factory.mktemp("committed") / "project")
    run(["itersg", "pipeline", "dvc"], project)
    run(["snakemake", "--cores", "2"], project, env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    run(["dvc", "commit", "-f", DEMO_DVC], project)
    return project


def test_dvc_commit_takes_over_a_snakemake_run(committed_demo):
    status = run(["dvc", "status", DEMO_DVC], committed_demo).stdout
    assert status.strip().endswith("Data and pipelines are up to date.")
    assert ran_stages(run(["dvc", "repro", DEMO_DVC], committed_demo).stdout) == []
    run(["dvc", "push"], committed_demo)
    assert any((committed_demo / "dvc-remote").rglob("*"))


# ---------------------------------------------------------------------------------------------------
# Code: each stage depends on the modules its command imports, and a change to one module reruns exactly
# the stages that import it, under DVC and Snakemake alike.

_IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(itersg(?:\.\w+)*)\s*$", re.M)


def _stage_code(project: Path) -> dict[str, set[str]]:
    """Stage name -> the package files its dvc.yaml entry lists."""
    stages = yaml.safe_load((project / DEMO_DVC).read_text())["stages"]
    return {name: {dep for dep in stage.get("deps", []) if dep.startswith("src/itersg/")}
            for name, stage in stages.items()}


def test_each_stage_depends_on_every_module_its_run_imported(committed_demo):
    """What Python really loaded in each job (beyond what building the command line loads for every verb)
    is among the files its stage lists."""
    parser_only = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "from itersg.cli import build_parser; build_parser()"],
        capture_output=True, text=True, check=True).stderr
    common = set(_IMPORTED.findall(parser_only))
    code, graph = _stage_code(committed_demo), ImportGraph.of_project(committed_demo)
    missing = {}
    for job in workflow_jobs(committed_demo, "demo"):
        loaded = set(_IMPORTED.findall((committed_demo / job.logs[0]).read_text())) - common
        assert loaded, f"{job.logs[0]} records no import: is PYTHONPROFILEIMPORTTIME passed to the jobs?"
        files = {graph.files[module].relative_to(committed_demo).as_posix() for module in loaded}
        if files - code[job.stage_name]:
            missing[job.stage_name] = sorted(files - code[job.stage_name])
    assert not missing


def test_changing_one_module_reruns_exactly_the_stages_that_import_it(committed_demo):
    project = committed_demo
    code = _stage_code(project)
    users: dict[str, frozenset[str]] = {}
    for path in ImportGraph.of_project(project).all_files():
        name = path.relative_to(project).as_posix()
        users[name] = frozenset(stage for stage, files in code.items() if name in files)
    # one module of each distinct set of stages, the stages of no module included
    chosen = {stages: name for name, stages in sorted(users.items())}
    assert len(chosen) >= 5 and frozenset() in chosen
    assert _dvc_changed(project) == set() and changed_jobs(project, "demo") == {}
    mismatches = []
    for stages, name in chosen.items():
        path = project / name
        text = path.read_bytes()
        path.write_bytes(text + (b"\n# changed\n" if name.endswith(".py") else b"\n"))
        try:
            found = {"dvc": _dvc_changed(project), "snakemake": set(changed_jobs(project, "demo"))}
        finally:
            path.write_bytes(text)
        if found["dvc"] != stages or found["snakemake"] != stages:
            mismatches.append(f"{name}: expected {sorted(stages)}, DVC {sorted(found['dvc'])}, "
                              f"Snakemake {sorted(found['snakemake'])}")
    assert not mismatches, "\n".join(mismatches)
    assert _dvc_changed(project) == set() and changed_jobs(project, "demo") == {}


# ---------------------------------------------------------------------------------------------------
# Every key of the schema: change it, and DVC and Snakemake must want to rerun exactly the stages its
# `x-stages` names (for a variant's key: that variant's), plus the jobs that the change adds or rewires;
# nothing when the demo does not see the change (a key that `demo:` overrides).


def _resolved(spec: dict, schema: dict) -> dict:
    """``spec`` with its ``$ref`` followed; keys written beside the ``$ref`` (its x-stages) win."""
    while "$ref" in spec:
        siblings = {key: value for key, value in spec.items() if key != "$ref"}
        spec = {**schema["$defs"][spec["$ref"].split("/")[-1]], **siblings}
    return spec


def schema_keys(variant_names: list[str] | None = None) -> Iterator[tuple[str, dict, list[str]]]:
    """(dotted key, its schema, its x-stages) for every key, demo overrides and every variant's keys included
    (of ``variant_names``, default every variant)."""
    schema = params_schema()
    if variant_names is None:
        variant_names = _resolved({"$ref": "#/$defs/variant_name"}, schema)["enum"]

    def walk(key: str, spec: dict, stages: list[str] | None) -> Iterator[tuple[str, dict, list[str]]]:
        spec = _resolved(spec, schema)
        stages = spec.get("x-stages", stages)
        if "properties" in spec:
            for name, sub in spec["properties"].items():
                yield from walk(f"{key}.{name}", sub, stages)
        elif isinstance(spec.get("additionalProperties"), dict):
            for name in variant_names:
                yield from walk(f"{key}.{name}", spec["additionalProperties"], stages)
        else:
            yield key, spec, stages or []

    for section, spec in schema["properties"].items():
        if section != "demo":
            yield from walk(section, spec, None)
    for section, spec in schema["properties"]["demo"]["properties"].items():
        section_stages = _resolved(schema["properties"][section], schema).get("x-stages")
        for key, key_spec, stages in walk(section, spec, section_stages):
            yield f"demo.{key}", key_spec, stages


def _get(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _set(tree: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[last] = value


def _candidates(spec: dict, value: Any, schema: dict) -> list[Any]:
    """Other values of a key's type, nearest first (the first one params validation accepts is used)."""
    spec = _resolved(spec, schema)
    if "enum" in spec:
        return [choice for choice in spec["enum"] if choice != value]
    kind = spec.get("type")
    if isinstance(kind, list):  # a nullable key (train.lr_new): its other type
        kind = next(k for k in kind if k != "null")
    if value is None:  # a key without a default or a value (model.overrides.hidden_dim): set it
        return {"integer": [2, 4], "number": [0.25, 0.5], "boolean": [False, True],
                "object": [{"small": True}]}[kind]
    if kind == "boolean":
        return [not value]
    if kind == "integer":
        return [value + 1, value - 1, value * 2]
    if kind == "number":
        return [value * 2, value / 2, value + 1]
    if kind == "string":
        return [f"{value}-changed"]
    if kind == "array":
        items = _resolved(spec.get("items", {}), schema)
        if "enum" in items:
            others = [choice for choice in items["enum"] if choice not in value]
            return [value[:-1], *([[*value, others[0]]] if others else [])]
        return [value[:-1], [*value, value[-1] + 8], [v + 8 for v in value]]
    if kind == "object":
        return [{**value, "dropout": 0.25}]
    raise AssertionError(f"no change known for a {kind} key")


def _change(project: Path, key: str, spec: dict, schema: dict) -> Any:
    """Write the first valid changed value of ``key`` into params.yaml; return the value."""
    path = project / "params.yaml"
    original = yaml.safe_load(path.read_text())
    current = _get(resolve_params({**original, "mode": "demo"}), key.removeprefix("demo."))
    if key.startswith("demo.") and _get(original, key) is not None:
        current = _get(original, key)
    elif not key.startswith("demo."):
        current = _get(resolve_params({**original, "mode": "full"}), key)
    if current is None:  # a key without a default: its effective value (a variant's recipe key)
        current = _effective(resolve_params({**original, "mode": "demo"}), key.removeprefix("demo."), spec, schema)
    for value in _candidates(spec, current, schema):
        changed = json.loads(json.dumps(original))
        _set(changed, key, value)
        try:
            resolve_params({**changed, "mode": "demo"})
            resolve_params({**changed, "mode": "full"})
        except UserError:
            continue
        path.write_text(yaml.safe_dump(changed, sort_keys=False))
        return value
    raise AssertionError(f"{key}: no valid other value among {_candidates(spec, current, schema)}")


def _effective(params: dict, key: str, spec: dict, schema: dict) -> Any:
    """The value ``key`` stands for when it is not set: a variant's recipe key falls back to the study's."""
    parts = key.split(".")
    if parts[0] == "variants" and parts[-1] in RECIPE_KEYS:
        return variant_recipe(params, parts[1])[parts[-1]]
    return _resolved(spec, schema).get("default")


def _job_files(project: Path) -> dict[str, tuple[list[str], list[str]]]:
    return {job.stage_name: (sorted(job.inputs), sorted(job.outputs)) for job in workflow_jobs(project, "demo")}


def _expected(project: Path, key: str, stages: list[str], before: dict, after: dict, demo_before: dict,
              demo_after: dict) -> set[str]:
    """The stages the change of ``key`` must rerun (in the demo's DAG after the change)."""
    read_as = key.removeprefix("demo.")
    expected = {name for name, files in after.items() if before.get(name) != files}  # new or rewired jobs
    if _get(demo_before, read_as) == _get(demo_after, read_as):
        return expected
    variant = read_as.split(".")[1] if read_as.startswith("variants.") else None
    for job in workflow_jobs(project, "demo"):
        if ("all" in stages or params_stage(job.rule) in stages) and variant in (None, job.wildcards.get("variant")):
            expected.add(job.stage_name)
    return expected


def _dvc_changed(project: Path) -> set[str]:
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return {name.rsplit(":", 1)[-1] for name in repo.status(targets=[str(project / DEMO_DVC)])}


def _downstream(direct: set[str], jobs: dict[str, tuple[list[str], list[str]]]) -> set[str]:
    closure = set(direct)
    while True:
        made = {out for name in closure for out in jobs[name][1]}
        more = {name for name, (inputs, _) in jobs.items() if set(inputs) & made} - closure
        if not more:
            return closure
        closure |= more


def test_every_schema_key_reruns_exactly_the_stages_it_names(committed_demo):
    project, schema = committed_demo, params_schema()
    params_text = (project / "params.yaml").read_text()
    dvc_text = (project / DEMO_DVC).read_text()
    before = _job_files(project)
    demo_before = resolve_params({**yaml.safe_load(params_text), "mode": "demo"})
    assert _dvc_changed(project) == set() and rerun_reasons(project, "demo") == {}
    # every variant key of the demo's variants, and of one variant outside the demo (it reruns nothing)
    study = demo_before["study"]["variants"]
    outside = next(name for name in _resolved({"$ref": "#/$defs/variant_name"}, schema)["enum"] if name not in study)
    keys = list(schema_keys([*study, outside]))
    assert len(keys) > 100 and {"data.crop_resize_sizes", "demo.train.lr", "variants.r101-detr.beta",
                                "variants.r101-detr.iterations"} <= {k for k, _, _ in keys}
    mismatches = []
    try:
        for key, spec, stages in keys:
            value = _change(project, key, spec, schema)
            (project / DEMO_DVC).write_text(dvc_yaml(project, load_params(project / "params.yaml", ["mode=full"]),
                                                     "demo"))
            after = _job_files(project)
            demo_after = resolve_params({**yaml.safe_load((project / "params.yaml").read_text()), "mode": "demo"})
            expected = _expected(project, key, stages, before, after, demo_before, demo_after)
            reasons = rerun_reasons(project, "demo")
            snakemake_direct = set(changed_jobs(project, "demo"))
            found = {"dvc": _dvc_changed(project), "snakemake": snakemake_direct}
            if found["dvc"] != expected or found["snakemake"] != expected \
                    or set(reasons) != _downstream(expected, after):
                mismatches.append(f"{key}={value!r}: expected {sorted(expected)}, DVC {sorted(found['dvc'])}, "
                                  f"Snakemake {sorted(snakemake_direct)} (all {sorted(reasons)})")
            (project / "params.yaml").write_text(params_text)
            (project / DEMO_DVC).write_text(dvc_text)
    finally:
        (project / "params.yaml").write_text(params_text)
        (project / DEMO_DVC).write_text(dvc_text)
    assert not mismatches, "\n".join(mismatches)


def test_the_studys_dvc_yaml_lists_each_key_where_its_x_stages_say():
    """The study's own file (which cannot run here): a key (or the variant it belongs to) is a param of
    exactly the stages of its x-stages."""
    root = Path(__file__).resolve().parents[2]
    stages = yaml.safe_load((root / DVC_FILES["full"]).read_text())["stages"]
    jobs = workflow_jobs(root, "full")
    written = yaml.safe_load((root / "params.yaml").read_text())
    study = load_params(root / "params.yaml", ["mode=full"])["study"]["variants"]
    for key, _, key_stages in schema_keys():
        if key.startswith("demo."):
            continue
        variant = key.split(".")[1] if key.startswith("variants.") else None
        listing = {name for name, stage in stages.items()
                   if any(key == p or key.startswith(f"{p}.") for p in stage.get("params", []))}
        # a variant's recipe keys reach the report where they are set (they decide its rows)
        report_reads = variant in study and _get(written, key) is not None
        named = {job.stage_name for job in jobs if ("all" in key_stages or params_stage(job.rule) in key_stages)
                 and (variant in (None, job.wildcards.get("variant")) or (job.rule == "report" and report_reads))}
        assert listing == named, key
