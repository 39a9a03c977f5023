"""`itersg evaluate`: run a checkpoint on a split -> predictions file -> metrics JSON.

Seconds per image are measured around the model and its post-processing only (data loading and
the predictions file excluded), after ``warmup_batches`` batches, with the device synchronised.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from itersg.data.dataset import VG150Dataset, collate
from itersg.data.transforms import eval_transforms
from itersg.data.verify import check_structure
from itersg.data.vg150 import VG150Index, load_split_ground_truth, load_vocabulary, load_zero_shot
from itersg.errors import UserError
from itersg.evaluation.metrics import compute_metrics, metrics_document, write_metrics_json
from itersg.evaluation.predictions import PredictionsReader, PredictionsWriter
from itersg.files import check_writable_folder
from itersg.models.postprocess import postprocess_scene_graphs
from itersg.models.registry import build_model, count_parameters
from itersg.models.weights.checkpoint_keys import load_weights
from itersg.precision import Precision

PREDICTIONS_FILE = "predictions.h5"
METRICS_FILE = "metrics.json"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_model(params: Mapping[str, Any], variant: str, checkpoint: str | Path, num_classes: int,
               num_predicates: int, device: torch.device) -> torch.nn.Module:
    """The variant's model with every weight from ``checkpoint`` (refuses partial and non-finite checkpoints)."""
    model = build_model(variant, num_classes=num_classes, num_predicates=num_predicates,
                        overrides=params["model"]["overrides"], transformer_level=params["model"]["transformer_level"])
    if not Path(checkpoint).is_file():
        raise UserError(f"{checkpoint}: checkpoint not found; train the variant first (itersg train)")
    report = load_weights(model, checkpoint)
    if report.initialised:
        raise UserError(f"{checkpoint}: has no weights for {list(report.initialised)[:5]}; evaluate a trained "
                        "checkpoint of this variant")
    return model.eval().to(device)


def _check_finite(outputs: Mapping[str, Any], batch_index: int) -> None:
    """Non-finite scores or boxes would rank arbitrarily: stop with the batch that produced them."""
    for name, value in outputs.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            raise UserError(f"the model's '{name}' holds NaN or infinite values at batch {batch_index}; the "
                            "weights or the inputs are broken (with evaluate.precision fp16, try fp32 or bf16)")


@torch.inference_mode()
def predict(model: torch.nn.Module, loader: DataLoader, writer: PredictionsWriter, device: torch.device,
            warmup_batches: int, precision: str = "fp32") -> dict[str, Any]:
    """Write the predictions of every image; returns the timing record.

    ``precision`` is ``evaluate.precision``: fp32 as the reference evaluates, or bf16/fp16 autocast on CUDA.
    """
    autocast = Precision(precision, device)
    timed_seconds, timed_images = 0.0, 0
    for batch_index, (images, targets) in enumerate(loader):
        images = [image.to(device, non_blocking=True) for image in images]
        _synchronize(device)
        start = time.perf_counter()
        with autocast.autocast():
            outputs = model(images)
        _check_finite(outputs, batch_index)
        predictions = postprocess_scene_graphs(
            outputs, [t["size"].tolist() for t in targets], [t["orig_size"].tolist() for t in targets],
            [t["image_id"] for t in targets])
        _synchronize(device)
        if batch_index >= warmup_batches:
            timed_seconds += time.perf_counter() - start
            timed_images += len(images)
        for prediction in predictions:
            writer.add(prediction)
    return {"s_per_image": timed_seconds / timed_images if timed_images else None,
            "batch_size": loader.batch_size, "device": _device_name(device),
            "warmup_batches": warmup_batches, "images_timed": timed_images, "precision": autocast.name}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)} x{torch.cuda.device_count()}"
    return f"cpu ({torch.get_num_threads()} threads)"


def evaluate(params: Mapping[str, Any], variant: str, checkpoint: str | Path, split: str, out: str | Path,
             iteration: int | None = None, device: torch.device | None = None) -> dict[str, Any]:
    """Evaluate ``checkpoint`` of ``variant`` on ``split``; writes OUT/predictions.h5 and OUT/metrics.json."""
    device = device or default_device()
    out = check_writable_folder(out)  # before the model runs: a read-only --out is one line at once
    data = params["data"]
    root = Path(data["root"])
    check_structure(root)
    vocabulary = load_vocabulary(root)
    model = load_model(params, variant, checkpoint, len(vocabulary.classes), len(vocabulary.predicates), device)
    iteration = iteration if iteration is not None else _iteration_of(checkpoint)
    index = VG150Index(root, split, data["num_val_images"])
    dataset = VG150Dataset(index, eval_transforms(data["test_size"], data["test_max_size"]))
    loader = DataLoader(dataset, batch_size=params["evaluate"]["batch_size"], num_workers=data["num_workers"],
                        collate_fn=collate, pin_memory=device.type == "cuda")
    with PredictionsWriter(out / PREDICTIONS_FILE, variant=variant, iteration=iteration, split=split,
                           num_object_classes=len(vocabulary.classes), num_predicates=len(vocabulary.predicates),
                           expected_images=len(dataset)) as writer:
        timing = predict(model, loader, writer, device, params["evaluate"]["warmup_batches"],
                         params["evaluate"]["precision"])
    ground_truth = load_split_ground_truth(root, split, data["num_val_images"])
    with PredictionsReader(out / PREDICTIONS_FILE) as reader:
        metrics = compute_metrics(reader, ground_truth, load_zero_shot(root), vocabulary.predicates,
                                  num_object_classes=len(vocabulary.classes))
    document = metrics_document(variant=variant, iteration=iteration, split=split, metrics=metrics,
                                timing=timing, params=count_parameters(model))
    write_metrics_json(out / METRICS_FILE, document)
    return document


def _iteration_of(checkpoint: str | Path) -> int:
    """The training iteration stored in a checkpoint of the training engine (0 if none is stored)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    return int(state.get("iteration", 0)) if isinstance(state, dict) else 0
