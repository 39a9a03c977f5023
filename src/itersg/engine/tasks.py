"""What a run trains: IterativeSG on scene graphs (``train``) or DETR on objects (``pretrain_detr``).

A ``Task`` bundles the model, its criterion, the datasets, the schedule (iterations, global batch,
checkpoints to keep) and the validation hooks; the runner treats both stages alike. Only this module
(and ``datasets``) knows the models, data and evaluation packages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn
from torch.utils.data import Dataset

from itersg.engine import datasets
from itersg.errors import UserError

STAGES = ("train", "pretrain_detr")


@dataclass
class Task:
    """Everything stage-specific of a training run."""

    stage: str
    variant: str
    model: nn.Module
    criterion: nn.Module
    train_set: Dataset
    val_set: Dataset | None
    collate: Callable[[list], Any]
    iterations: int
    global_batch: int
    keep_iterations: tuple[int, ...] = ()
    predict: Callable[[Mapping[str, Any], Sequence[Mapping[str, Tensor]]], list[dict]] | None = None
    score: Callable[[list[tuple[dict, dict]]], dict[str, float]] | None = None
    ground_truth: Callable[[Mapping[str, Tensor]], dict] | None = None
    load_init: Callable[[nn.Module, Path], Any] | None = None  # initial weights (``--init``)


def build_task(params: Mapping[str, Any], stage: str, variant: str | None) -> Task:
    """The ``Task`` of ``stage`` for ``variant`` from the resolved params."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    variant = variant or "r101-detr"
    from itersg.models.registry import get_variant

    get_variant(variant)  # a clear error for an unknown name
    if stage == "train" and variant not in params["variants"]:
        raise UserError(f"variant {variant!r} has no settings under 'variants:' in the params; add "
                        "{alpha: ..., beta: ...} for it")
    egtr = get_variant(variant).method == "egtr"
    filters = egtr_filters(params["variants"].get(variant, {})) if egtr and stage == "train" else None
    data = datasets.load_datasets(params, detection_only=stage == "pretrain_detr", egtr_filters=filters)
    if stage == "train":
        from itersg.config import for_variant

        if egtr:
            return _egtr_task(for_variant(params, variant), variant, data, filters)
        return _scene_graph_task(for_variant(params, variant), variant, data)
    return _detr_task(params, variant, data)


def egtr_filters(settings: Mapping[str, Any]) -> Any:
    """EGTR's training-split filters (``itersg.data.egtr_split.EGTRFilters``) from ``variants.<name>``."""
    from itersg.data.egtr_split import EGTRFilters

    return EGTRFilters(**{key: settings[key] for key in ("filter_duplicate_rels", "filter_non_overlap")
                          if key in settings})


def _scene_graph_task(params: Mapping[str, Any], variant: str, data: datasets.Datasets) -> Task:
    from itersg.models.config import LossConfig
    from itersg.models.losses.build import build_criterion
    from itersg.models.registry import build_model
    from itersg.models.weights.checkpoint_keys import load_weights

    model = build_model(variant, num_classes=data.num_classes, num_predicates=data.num_predicates,
                        overrides=params["model"]["overrides"],
                        transformer_level=params["model"]["transformer_level"])
    loss = LossConfig.from_params(params["loss"], params["variants"][variant])
    if model.config.speaq is not None and data.predicate_counts is None:
        raise UserError(f"variant {variant!r} (SpeaQ) groups predicates by the 'predicate_count' of "
                        f"{params['data']['root']}/VG-SGG-dicts-with-attri.json, which has none for every "
                        "predicate; use the VG150 dicts file")
    criterion = build_criterion(model, loss, predicate_frequencies=data.predicate_frequencies,
                                predicate_counts=data.predicate_counts)
    return Task(
        stage="train", variant=variant, model=model, criterion=criterion, train_set=data.train,
        val_set=data.val, collate=data.collate, iterations=params["train"]["iterations"],
        global_batch=params["train"]["batch_size"],
        keep_iterations=tuple(params["study"]["eval_iterations"]),
        predict=_scene_graph_predictions, score=_scene_graph_score(params["data"], data.num_predicates),
        ground_truth=_image_id, load_init=load_weights,
    )


def _egtr_task(params: Mapping[str, Any], variant: str, data: datasets.Datasets, filters: Any) -> Task:
    """EGTR from the VG-pretrained Deformable DETR (``--init``): its relation head is new; the frequency
    tables are counted on EGTR's training split before the first step (checkpoints carry them)."""
    from itersg.data.egtr_split import egtr_training_graphs
    from itersg.models.losses.build import build_criterion
    from itersg.models.registry import build_model
    from itersg.models.relation.egtr import predicate_statistics
    from itersg.models.weights.checkpoint_keys import load_weights

    model = build_model(variant, num_classes=data.num_classes, num_predicates=data.num_predicates,
                        overrides=params["model"]["overrides"])
    graphs = egtr_training_graphs(params["data"]["root"], filters, params["data"]["num_val_images"])
    # as the reference's vg_get_statistics: every training row counts (the filters above already ran)
    model.relation.load_statistics(predicate_statistics(graphs, data.num_classes, data.num_predicates,
                                                        must_overlap=False, unique=False))
    criterion = build_criterion(model)
    return Task(
        stage="train", variant=variant, model=model, criterion=criterion, train_set=data.train,
        val_set=data.val, collate=data.collate, iterations=params["train"]["iterations"],
        global_batch=params["train"]["batch_size"], keep_iterations=tuple(params["study"]["eval_iterations"]),
        predict=_scene_graph_predictions, score=_scene_graph_score(params["data"], data.num_predicates),
        ground_truth=_image_id, load_init=load_weights,
    )


def _detr_task(params: Mapping[str, Any], variant: str, data: datasets.Datasets) -> Task:
    from itersg.models.config import LossConfig
    from itersg.models.losses.build import build_criterion
    from itersg.models.registry import build_detr

    model = build_detr(variant, num_classes=data.num_classes, overrides=params["model"]["overrides"],
                       transformer_level=params["model"]["transformer_level"])
    criterion = build_criterion(model, LossConfig.from_params(params["loss"]))
    return Task(
        stage="pretrain_detr", variant=variant, model=model, criterion=criterion, train_set=data.train,
        val_set=data.val, collate=data.collate, iterations=params["detr_weights"]["pretrain_iterations"],
        global_batch=params["detr_weights"]["pretrain_batch_size"],
        predict=_detections, score=_box_ap(), ground_truth=original_pixel_ground_truth,
    )


# --- validation hooks ------------------------------------------------------------------------------------


def original_pixel_ground_truth(target: Mapping[str, Tensor]) -> dict:
    """GT boxes (scaled back to original-image pixels), labels and relations as numpy arrays."""
    boxes = target["boxes"].detach().float().cpu().numpy().copy()
    (height, width), (orig_h, orig_w) = target["size"].tolist(), target["orig_size"].tolist()
    boxes[:, 0::2] *= orig_w / width
    boxes[:, 1::2] *= orig_h / height
    gt = {"image_id": int(target["image_id"]), "boxes": boxes.astype(np.float32),
          "labels": target["labels"].cpu().numpy().astype(np.int64)}
    if "relations" in target:
        gt["relations"] = target["relations"].cpu().numpy().astype(np.int64).reshape(-1, 3)
    return gt


def _sizes(targets: Sequence[Mapping[str, Tensor]]) -> tuple[list, list, list]:
    return ([t["size"].tolist() for t in targets], [t["orig_size"].tolist() for t in targets],
            [int(t["image_id"]) for t in targets])


def _scene_graph_predictions(outputs: Mapping[str, Any],
                             targets: Sequence[Mapping[str, Tensor]]) -> list[dict]:
    from itersg.models.postprocess import postprocess_scene_graphs

    return postprocess_scene_graphs(outputs, *_sizes(targets))


def _detections(outputs: Mapping[str, Any], targets: Sequence[Mapping[str, Tensor]]) -> list[dict]:
    from itersg.models.postprocess import postprocess_detections

    return postprocess_detections(outputs, *_sizes(targets))


def _image_id(target: Mapping[str, Tensor]) -> dict:
    return {"image_id": int(target["image_id"])}


def _scene_graph_score(data: Mapping[str, Any], num_predicates: int
                       ) -> Callable[[list[tuple[dict, dict]]], dict[str, float]] | None:
    """R@50 and mR@50 (ISG convention) with itersg.evaluation, or None when it is not installed.

    The ground truth is the evaluation's (``load_split_ground_truth``: original pixels, clipped,
    duplicate relations kept), read on the first call.
    """
    try:
        from itersg.evaluation.sg_metrics import scene_graph_scores
    except ImportError:
        return None
    from itersg.data.vg150 import load_split_ground_truth

    ground_truth: dict[int, dict] = {}

    def score(pairs: list[tuple[dict, dict]]) -> dict[str, float]:
        if not ground_truth:
            ground_truth.update(load_split_ground_truth(data["root"], "val", data["num_val_images"]))
        images = [(ground_truth[gt["image_id"]], prediction) for gt, prediction in pairs]
        sgdet = scene_graph_scores(images, num_predicates).sgdet()
        return {"R@50": sgdet["R@50"], "mR@50": sgdet["mR@50"]}

    return score


def _box_ap() -> Callable[[list[tuple[dict, dict]]], dict[str, float]] | None:
    """COCO box AP / AP50 with itersg.evaluation, or None when it is not installed."""
    try:
        from itersg.evaluation.detection import CocoBoxEvaluator
    except ImportError:
        return None

    def score(pairs: list[tuple[dict, dict]]) -> dict[str, float]:
        evaluator = CocoBoxEvaluator()
        for gt, pred in pairs:
            evaluator.add(gt["image_id"], gt["boxes"], gt["labels"], pred["boxes"], pred["labels"],
                          pred["scores"])
        summary = evaluator.summarize()
        return {"AP": summary["AP"], "AP50": summary["AP50"]}

    return score
