"""params.yaml -> one validated, resolved configuration dict.

The schema (``itersg/schemas/params.schema.yaml``, also ``workflow/schemas/``) is the single
description of every key: Snakemake validates the same file with it, and docs/configuration.md is
generated from it. ``load_params`` validates, fills the schema defaults and, in demo mode, merges
the ``demo:`` overrides, so every command sees the same effective values.

May import: itersg.errors, itersg.catalog.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from itersg.errors import UserError

SECTIONS_WITH_DEMO_OVERRIDES = (
    "seed", "data", "synth", "detr_weights", "study", "variants", "model", "loss", "train", "evaluate", "slurm",
)


class _ValueLoader(yaml.SafeLoader):
    """PyYAML's loader, plus floats written without a dot (``1e-4``), as YAML 1.2 and Python read them."""


_ValueLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"),
                                   list("-+0123456789"))


class _DuplicateKey(ValueError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key written twice in one mapping (PyYAML keeps the last one
    silently: a second ``train:`` section would replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(f"key {key!r} is written twice (lines {seen[key]} and {line}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep)


@cache
def params_schema() -> dict:
    """The JSON schema of params.yaml, as a dict."""
    return yaml.safe_load(files("itersg").joinpath("schemas/params.schema.yaml").read_text())


def _resolve_ref(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        path = schema["$ref"].removeprefix("#/").split("/")
        target = root
        for part in path:
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def stage_keys(stage: str) -> list[str]:
    """The params keys (dotted; sections without sub-keys by name) whose ``x-stages`` name ``stage`` or ``all``.

    The one walk over the schema that decides which keys a stage depends on: the fingerprint of a training
    run and the params of each DVC stage both come from it. ``demo`` and ``variants`` are not listed (the
    demo overrides the keys listed here; a variant's settings belong to that variant's stages only).
    """
    schema = params_schema()

    def wanted(spec: dict) -> bool:
        stages = _resolve_ref(spec, schema).get("x-stages", [])
        return stage in stages or "all" in stages

    keys = []
    for section, spec in schema["properties"].items():
        spec = _resolve_ref(spec, schema)
        if section in ("demo", "variants"):
            continue
        if "properties" not in spec:
            if wanted(spec):
                keys.append(section)
            continue
        keys += [f"{section}.{key}" for key, sub in spec["properties"].items() if wanted(sub)]
    return keys


def stage_values(params: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The resolved values of ``stage_keys(stage)`` in ``params`` (dotted key -> value)."""
    values: dict[str, Any] = {}
    for key in stage_keys(stage):
        section, _, sub = key.partition(".")
        if section in params and (not sub or sub in params[section]):
            values[key] = params[section][sub] if sub else params[section]
    return values


def _has_keys(schema: dict) -> bool:
    """A section or mapping the schema describes (not a free-form one such as model.overrides.backbone)."""
    return "properties" in schema or isinstance(schema.get("additionalProperties"), dict)


def _fill_defaults(value: Any, schema: dict, root: dict) -> Any:
    """Return ``value`` with the schema's defaults filled in for missing object keys."""
    schema = _resolve_ref(schema, root)
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    filled = dict(value)
    for key, sub in schema.get("properties", {}).items():
        sub = _resolve_ref(sub, root)
        if key not in filled and "default" in sub:
            filled[key] = copy.deepcopy(sub["default"])
        elif key not in filled and sub.get("type") == "object" and key != "demo" and _has_keys(sub):
            filled[key] = {}
        if key in filled and key != "demo":
            filled[key] = _fill_defaults(filled[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in filled.keys() - schema.get("properties", {}).keys():
            filled[key] = _fill_defaults(filled[key], extra, root)
    return filled


def _error_path(error: Any) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _nested(key: str, other: str) -> bool:
    """True when one dotted key is the other or lies inside it."""
    return f"{key}.".startswith(f"{other}.") or f"{other}.".startswith(f"{key}.")


def _is_integer(_checker: Any, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(_checker: Any, value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@cache
def _strict_validator() -> Any:
    """JSON Schema 2020-12 with Python's types: an ``integer`` is an int (JSON Schema also takes 2.0,
    which then breaks ``range()`` and tensor shapes) and a ``number`` is finite (``.nan`` passes every
    ``minimum`` comparison)."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_finite_number})
    return jsonschema.validators.extend(base, type_checker=checker)(params_schema())


TYPE_NAMES = {"integer": "an integer", "number": "a finite number", "string": "text", "boolean": "true or false",
              "object": "a mapping", "array": "a list", "null": "null"}


def _message(err: Any) -> str:
    """jsonschema's message, or for a wrong type: what is expected and what was given."""
    if err.validator != "type":
        return err.message
    types = [err.validator_value] if isinstance(err.validator_value, str) else err.validator_value
    expected = " or ".join(TYPE_NAMES.get(t, t) for t in types)
    return f"expected {expected}, got {err.instance!r} ({type(err.instance).__name__})"


def validate_params(params: Mapping[str, Any], source: str = "params.yaml", set_keys: Iterable[str] = ()) -> None:
    """Raise UserError naming the first offending key if ``params`` does not follow the schema.

    ``set_keys`` are the dotted keys given with ``--set``: an error in one of them names the ``--set``.
    """
    errors = sorted(_strict_validator().iter_errors(dict(params)), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        key = _error_path(err)
        where = f"{source}: key '{key}'"
        for assignment in set_keys:  # the offending value came from a --set, not from the file
            if any(_nested(a, b) for a, b in ((key, assignment), (key, f"demo.{assignment}"))):
                plain = key.removeprefix("demo.")
                inner = plain.removeprefix(f"{assignment}.") if plain.startswith(f"{assignment}.") else ""
                # a key inside the assigned mapping is named too: --set model.overrides={...}
                named = inner and not all(part.isdigit() for part in inner.split("."))
                where = f"--set {assignment}" + (f": key '{assignment}.{inner}'" if named else "")
                break
        raise UserError(f"{where}: {_message(err)}; fix it (every key is described in docs/configuration.md)")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve_params(raw: Mapping[str, Any], source: str = "params.yaml", set_keys: Iterable[str] = ()) -> dict[str, Any]:
    """Validate ``raw`` params, fill defaults and apply the demo overrides when ``mode: demo``."""
    validate_params(raw, source, set_keys)
    schema = params_schema()
    params = _fill_defaults(dict(raw), schema, schema)
    if params["mode"] == "demo":
        overrides = {k: v for k, v in params.get("demo", {}).items() if k in SECTIONS_WITH_DEMO_OVERRIDES}
        params = deep_merge(params, overrides)
    variant_defaults = _fill_defaults({}, schema["$defs"]["variant"], schema)
    params["variants"] = {**{v: dict(variant_defaults) for v in params["study"]["variants"]}, **params["variants"]}
    _check_consistency(params, source)
    return params


def _check_consistency(params: Mapping[str, Any], source: str) -> None:
    iterations = params["train"]["iterations"]
    too_late = [i for i in params["study"]["eval_iterations"] if i > iterations]
    if too_late:
        raise UserError(
            f"{source}: key 'study.eval_iterations': {too_late} exceed train.iterations ({iterations}); "
            "lower them or raise train.iterations"
        )
    for variant in params["variants"]:
        recipe = variant_recipe(params, variant)
        too_late = [i for i in recipe["eval_iterations"] if i > recipe["iterations"]]
        if too_late:
            raise UserError(f"{source}: key 'variants.{variant}': evaluation iterations {too_late} exceed its "
                            f"training iterations ({recipe['iterations']}); set its eval_iterations")


# A variant's own training recipe (``variants.<name>``) where it differs from the study's.
RECIPE_KEYS = ("iterations", "batch_size", "eval_iterations")


def variant_recipe(params: Mapping[str, Any], variant: str) -> dict[str, Any]:
    """``iterations``, ``batch_size`` and ``eval_iterations`` of ``variant``: its own settings where given
    (``variants.<name>``), else its catalogue recipe (``itersg.catalog``), else the study's
    ``train.iterations``, ``train.batch_size`` and ``study.eval_iterations``; a variant with its own
    iterations but no eval_iterations is evaluated at its last one."""
    from itersg.catalog import VARIANTS, Recipe

    catalogued = VARIANTS[variant].recipe if variant in VARIANTS else Recipe()
    recipe = {"iterations": catalogued.iterations or params["train"]["iterations"],
              "batch_size": catalogued.batch_size or params["train"]["batch_size"],
              "eval_iterations": list(catalogued.eval_iterations or params["study"]["eval_iterations"])}
    own = params["variants"].get(variant, {})
    if "iterations" in own:
        recipe["iterations"], recipe["eval_iterations"] = own["iterations"], [own["iterations"]]
    recipe.update({key: own[key] for key in ("batch_size", "eval_iterations") if key in own})
    return recipe


def variant_train_settings(params: Mapping[str, Any], variant: str) -> dict[str, Any]:
    """The optimiser settings (``catalog.TRAIN_RECIPE_KEYS``) ``variant`` replaces the study's ``train`` ones
    with: its catalogue recipe's (EGTR's learning rates), then its own ``variants.<name>`` values."""
    from itersg.catalog import TRAIN_RECIPE_KEYS, VARIANTS

    settings = dict(VARIANTS[variant].recipe.train) if variant in VARIANTS else {}
    own = params["variants"].get(variant, {})
    return {**settings, **{key: own[key] for key in TRAIN_RECIPE_KEYS if key in own}}


def for_variant(params: Mapping[str, Any], variant: str) -> dict[str, Any]:
    """``params`` with the study's recipe keys replaced by ``variant``'s (``variant_recipe``,
    ``variant_train_settings``)."""
    recipe = variant_recipe(params, variant)
    train = {"iterations": recipe["iterations"], "batch_size": recipe["batch_size"],
             **variant_train_settings(params, variant)}
    return deep_merge(params, {"train": train, "study": {"eval_iterations": recipe["eval_iterations"]}})


def for_pretraining(params: Mapping[str, Any], variant: str) -> dict[str, Any]:
    """``params`` for pretraining the detector ``variant`` starts from: EGTR's Deformable DETR takes
    ``detr_weights.deformable_pretrain_*`` as the pretraining's iterations and batch and its catalogue
    pretraining settings (``Variant.pretrain``) as ``train.*``; IterativeSG's DETR is the params as they are."""
    from itersg.catalog import VARIANTS

    spec = VARIANTS.get(variant)
    if spec is None or spec.detector != "deformable-detr":
        return dict(params)
    weights = params["detr_weights"]
    return deep_merge(params, {
        "detr_weights": {"pretrain_iterations": weights["deformable_pretrain_iterations"],
                         "pretrain_batch_size": weights["deformable_pretrain_batch_size"]},
        "train": dict(spec.pretrain.train) if spec.pretrain else {}})


def parse_assignments(assignments: Iterable[str]) -> dict[str, Any]:
    """Turn ``["train.iterations=100", "mode=demo"]`` into a nested override dict (values parsed as YAML)."""
    override: dict[str, Any] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.iterations=1000")
        node = override
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        try:
            node[leaf] = yaml.load(text, Loader=_ValueLoader)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or err.__class__.__name__
            raise UserError(f"--set {key}: the value {text!r} is not valid YAML ({problem}); quote it or fix the "
                            "brackets, e.g. --set 'study.eval_iterations=[100000, 250000]'") from None
    return override


def load_params(path: str | Path = "params.yaml", overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read, override (``KEY=VALUE`` strings), validate and resolve a params file."""
    path, overrides = Path(path), list(overrides)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                        "save it as UTF-8") from None
    except _DuplicateKey as err:
        raise UserError(f"{path}: {err}") from None
    except FileNotFoundError:
        raise UserError(f"{path}: no such params file; run from the project root or pass --params") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a params file; pass the params.yaml inside it") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err.__class__.__name__}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    mode_override = parse_assignments(overrides)
    # `--set train.iterations=5` in demo mode must win over the demo section: apply to both.
    raw = deep_merge(raw, mode_override)
    if raw.get("mode") == "demo" and isinstance(raw.get("demo"), dict):
        raw["demo"] = deep_merge(raw["demo"], {k: v for k, v in mode_override.items()
                                               if k in SECTIONS_WITH_DEMO_OVERRIDES})
    return resolve_params(raw, str(path), [item.partition("=")[0] for item in overrides])


def params_hash(params: Mapping[str, Any]) -> str:
    """sha256 of the resolved params (canonical JSON), for provenance."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
