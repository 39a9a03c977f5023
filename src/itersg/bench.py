"""`itersg bench infer|train`: model speed on synthetic inputs, recorded with the machine it ran on.

infer: forward + post-processing (class-aware NMS, triplet ranking) per image, batched, after warm-up,
device synchronised; data loading excluded. train: forward, Hungarian matching, loss, backward, gradient
clipping and the AdamW step per image; random images and targets are made on the device beforehand.

May import: itersg.errors, itersg.files, itersg.models.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from itersg.models.config import LossConfig
from itersg.models.losses.build import build_criterion
from itersg.models.postprocess import postprocess_scene_graphs
from itersg.models.registry import build_model, count_parameters


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    return f"{cpu} CPU, {torch.get_num_threads()} threads (torch {torch.__version__})"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if device.type == "cuda" and precision in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def random_batch(batch_size: int, height: int, width: int, num_classes: int, num_predicates: int,
                 device: torch.device, generator: torch.Generator) -> tuple[list[torch.Tensor], list[dict]]:
    """uint8 images [3, H, W] and targets with 10 boxes and 6 relations each."""
    images, targets = [], []
    for i in range(batch_size):
        images.append(torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator).to(device))
        corner = torch.rand(10, 2, generator=generator) * torch.tensor([width * 0.7, height * 0.7])
        size = 8 + torch.rand(10, 2, generator=generator) * torch.tensor([width * 0.3, height * 0.3])
        relations = torch.stack([torch.randint(0, 10, (6,), generator=generator),
                                 torch.randint(0, 10, (6,), generator=generator),
                                 torch.randint(0, num_predicates, (6,), generator=generator)], 1)
        targets.append({"boxes": torch.cat([corner, corner + size], 1).to(device),
                        "labels": torch.randint(0, num_classes, (10,), generator=generator).to(device),
                        "relations": relations.to(device), "image_id": i,
                        "orig_size": torch.tensor([height, width]), "size": torch.tensor([height, width])})
    return images, targets


def _timed(step: Callable[[], None], warmup: int, iterations: int, device: torch.device) -> float:
    """Seconds of ``iterations`` calls of ``step`` after ``warmup`` untimed ones (device synchronised)."""
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    _sync(device)
    return time.perf_counter() - start


def _prepare(model: torch.nn.Module, device: torch.device, channels_last: bool, compile_model: bool):
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model, dynamic=False) if compile_model else model


def _record(kind: str, variant: str, batch_size: int, height: int, width: int, precision: str,
            channels_last: bool, compile_model: bool, device: torch.device, **figures: Any) -> dict[str, Any]:
    return {"bench": kind, "variant": variant, **figures, "batch_size": batch_size, "image_size": [height, width],
            "precision": precision if device.type == "cuda" else "fp32", "channels_last": channels_last,
            "compile": compile_model, "machine": machine()}


def bench_infer(variant: str, *, batch_size: int = 16, height: int = 800, width: int = 1066, iterations: int = 10,
                warmup: int = 3, precision: str = "bf16", channels_last: bool = False, compile_model: bool = False,
                overrides: Mapping[str, Any] | None = None, device: torch.device | None = None) -> dict[str, Any]:
    """Milliseconds per image of forward + post-processing at ``batch_size``."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(variant, overrides=overrides).eval()
    counts = count_parameters(model)
    runner = _prepare(model, device, channels_last, compile_model)
    generator = torch.Generator().manual_seed(0)
    images, targets = random_batch(batch_size, height, width, 150, 50, device, generator)
    sizes = [t["size"].tolist() for t in targets]

    @torch.inference_mode()
    def step() -> None:
        with _autocast(device, precision):
            outputs = runner(images)
        postprocess_scene_graphs(outputs, sizes, sizes)

    seconds = _timed(step, warmup, iterations, device)
    return _record("infer", variant, batch_size, height, width, precision, channels_last, compile_model, device,
                   ms_per_image=1000 * seconds / (iterations * batch_size), params=counts)


def bench_train(variant: str, *, batch_size: int = 12, height: int = 800, width: int = 1066, iterations: int = 10,
                warmup: int = 3, precision: str = "bf16", channels_last: bool = False, compile_model: bool = False,
                overrides: Mapping[str, Any] | None = None, device: torch.device | None = None) -> dict[str, Any]:
    """Images per second of a full training step (matching, loss, backward, clip, fused AdamW on GPU)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(variant, overrides=overrides).train()
    # SpeaQ groups predicates by count: the random batch draws them uniformly, so count them equal
    counts = torch.ones(50, dtype=torch.int64)
    criterion = build_criterion(model, LossConfig(), predicate_counts=counts).to(device)
    runner = _prepare(model, device, channels_last, compile_model)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, weight_decay=1e-4, fused=device.type == "cuda")
    generator = torch.Generator().manual_seed(0)
    images, targets = random_batch(batch_size, height, width, 150, 50, device, generator)

    def step() -> None:
        with _autocast(device, precision):
            outputs = runner(images)
        loss = criterion.weighted_total(criterion(outputs, targets))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 0.01)
        optimizer.step()

    seconds = _timed(step, warmup, iterations, device)
    return _record("train", variant, batch_size, height, width, precision, channels_last, compile_model, device,
                   images_per_second=iterations * batch_size / seconds)
