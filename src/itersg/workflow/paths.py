"""Where every pipeline stage writes: the one source of output paths for Snakemake, DVC and the report.

All paths are relative to the project root and depend only on the resolved params (``mode`` keeps
the demo's results apart from the full study's).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any

# The schema stage (``x-stages``) whose keys a rule depends on, where it is not the rule's own name.
RULE_PARAM_STAGES = {"fetch_vg": "download", "fetch_detr": "detr_weights", "replicate_decoder": "detr_weights",
                     "fetch_egtr_detr": "detr_weights", "pretrain_deformable_detr": "pretrain_detr"}
VG_FILES = (
    "VG-SGG-with-attri.h5",
    "VG-SGG-dicts-with-attri.json",
    "image_data.json",
    "zeroshot_triplet.pytorch",
)


def report_file(params: Mapping[str, Any]) -> str:
    """The HTML report: ``reports/report.html`` for the study, ``reports/demo/report.html`` for the demo
    (each mode's own file, so that the study's and the demo's DVC stages never share an output)."""
    return "reports/report.html" if params["mode"] == "full" else f"reports/{params['mode']}/report.html"


class NotASetting:
    """Text a rule passes to its command as a ``params`` entry although it does not change the results
    (how processes are started, for example). Snakemake's params rerun trigger records only plain values
    (str, numbers, lists, ...), so it skips this one: changing it reruns nothing, as under DVC."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every non-mapping value of a nested mapping."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def itersg_args(mode: str, config_overrides: Mapping[str, Any]) -> NotASetting:
    """The params arguments of every ``itersg`` command of the workflow: params.yaml, the mode, and every
    value that ``snakemake --config`` or ``--configfile`` changed (``config_overrides``), each as
    ``--set KEY=VALUE``, so that the commands resolve the same params as the workflow does.

    Not a setting: the jobs list the values their results depend on (``settings``), so an override
    reruns only the jobs whose values it changes."""
    assignments = [f"mode={mode}"] + [f"{key}={json.dumps(value)}" for key, value in _leaves(config_overrides)
                                      if key != "mode"]
    return NotASetting(" ".join(["--params params.yaml", *(f"--set {shlex.quote(a)}" for a in assignments)]))


def params_stage(rule: str) -> str:
    """The schema stage whose keys the jobs of ``rule`` depend on."""
    return RULE_PARAM_STAGES.get(rule, rule)


def results_dir(params: Mapping[str, Any]) -> PurePosixPath:
    """``results/<mode>``: everything the study computes."""
    return PurePosixPath("results") / params["mode"]


def data_root(params: Mapping[str, Any]) -> PurePosixPath:
    """The VG150 (or synthetic VG-format) folder the stages read."""
    return PurePosixPath(params["data"]["root"])


def vg_files(params: Mapping[str, Any]) -> dict[str, str]:
    """The four annotation files of the dataset, by short name."""
    root = data_root(params)
    names = ("h5", "dicts", "image_data", "zero_shot")
    return {name: str(root / file) for name, file in zip(names, VG_FILES, strict=True)}


def image_dir(params: Mapping[str, Any]) -> str:
    return str(data_root(params) / "VG_100K")


def verified_flag(params: Mapping[str, Any]) -> str:
    return str(results_dir(params) / "data" / "verified.txt")


def prepare_summary(params: Mapping[str, Any]) -> str:
    return str(results_dir(params) / "data" / "prepare.json")


def detr_pretrain_dir(params: Mapping[str, Any]) -> str:
    return str(results_dir(params) / "detr")


def replicated_init(params: Mapping[str, Any]) -> str:
    """IterativeSG initial weights made from the pretrained DETR by decoder replication."""
    return str(results_dir(params) / "weights" / "r101-detr_init.pth")


def released_detr(params: Mapping[str, Any]) -> str:
    """The released VG-pretrained DETR of IterativeSG, as `itersg fetch` places it."""
    return "resources/weights/iterativesg_detr_vg.pth"


def deformable_detr_pretrain_dir(params: Mapping[str, Any]) -> str:
    """EGTR's Deformable DETR pretrained here on VG objects."""
    return str(results_dir(params) / "deformable_detr")


def released_deformable_detr(params: Mapping[str, Any]) -> str:
    """EGTR's released VG-pretrained Deformable DETR, as `itersg fetch egtr-detr-vg` places it."""
    return "resources/weights/egtr_detr_vg.ckpt"


def train_dir(params: Mapping[str, Any], variant: str) -> str:
    return str(results_dir(params) / "train" / variant)


def final_weights(params: Mapping[str, Any], variant: str) -> str:
    return f"{train_dir(params, variant)}/model_final.pth"


def checkpoint(params: Mapping[str, Any], variant: str, iteration: int) -> str:
    """A checkpoint the evaluation reads; the training engine never prunes these."""
    return f"{train_dir(params, variant)}/checkpoints/model_{int(iteration):07d}.pth"


def curves_dir(params: Mapping[str, Any], variant: str) -> str:
    return f"{train_dir(params, variant)}/dvclive"


def eval_dir(params: Mapping[str, Any], variant: str, iteration: int | str) -> str:
    return str(results_dir(params) / "eval" / variant / str(iteration))


def metrics_file(params: Mapping[str, Any], variant: str, iteration: int | str) -> str:
    return f"{eval_dir(params, variant, iteration)}/metrics.json"


def predictions_file(params: Mapping[str, Any], variant: str, iteration: int | str) -> str:
    """The evaluation's predictions file (docs/predictions-format.md); the report's gallery reads it."""
    return f"{eval_dir(params, variant, iteration)}/predictions.h5"


def log_file(params: Mapping[str, Any], rule: str, wildcard_part: str = "") -> str:
    """The log of one Snakemake job: ``logs/<mode>/<rule>/<wildcards or 'all'>.log``."""
    return f"logs/{params['mode']}/{rule}/{wildcard_part or 'all'}.log"


def failed_metrics_dir(params: Mapping[str, Any]) -> str:
    """Where a failed run of the workflow leaves a failed-status metrics file per missing evaluation."""
    return str(results_dir(params) / "failed")


def evaluations(params: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(variant, iteration) of every evaluation of the study, variant-major: each variant at its own
    ``eval_iterations`` where it has them, else at the study's."""
    from itersg.config import variant_recipe

    return [(variant, iteration) for variant in params["study"]["variants"]
            for iteration in variant_recipe(params, variant)["eval_iterations"]]


def all_metrics(params: Mapping[str, Any]) -> list[str]:
    """Every metrics file of the study, variant-major."""
    return [metrics_file(params, variant, iteration) for variant, iteration in evaluations(params)]


def all_predictions(params: Mapping[str, Any]) -> list[str]:
    """Every predictions file of the study, in the order of ``all_metrics``."""
    return [predictions_file(params, variant, iteration) for variant, iteration in evaluations(params)]


def initial_weights(params: Mapping[str, Any], variant: str) -> list[str]:
    """The file ``variant``'s training starts from (the catalogue's ``init``; ``detr_weights.source``
    picks the released detector or the one pretrained here): the IterativeSG weights replicated from the
    VG-pretrained DETR, EGTR's VG-pretrained Deformable DETR, or none."""
    from itersg.catalog import get_variant

    init, released = get_variant(variant).init, params["detr_weights"]["source"] == "released"
    if init == "vg-detr":
        return [released_detr(params) if released else replicated_init(params)]
    if init == "vg-deformable-detr":
        return [released_deformable_detr(params) if released
                else f"{deformable_detr_pretrain_dir(params)}/model_final.pth"]
    return []


def gallery_inputs(params: Mapping[str, Any]) -> dict[str, str]:
    """What the report's gallery reads of the dataset: the ground truth, the names and the images."""
    files = vg_files(params)
    return {"h5": files["h5"], "dicts": files["dicts"], "image_data": files["image_data"],
            "images": image_dir(params)}
