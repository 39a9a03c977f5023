"""Timing of the scene-graph metrics on synthetic VG-sized data, optionally against a loop oracle.

The synthetic set has the sizes of a VG150 sgdet evaluation: ~11 GT objects and ~6 GT relations per
image; per prediction 100 boxes (noisy copies of the GT boxes, then random boxes), 300 ranked relation
rows and 51 softmax columns. The oracle is passed in as a callable (the tests hold the loop port of the
reference evaluator); both run on the same images and their ``sgdet`` numbers are compared.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from itersg.evaluation.detection import CocoBoxEvaluator
from itersg.evaluation.sg_metrics import scene_graph_scores

Oracle = Callable[..., Mapping[str, float]]  # oracle(images, num_predicates, zero_shot_0based, convention)


def _random_boxes(rng: np.random.Generator, n: int, width: float, height: float) -> np.ndarray:
    """[n, 4] float32 xyxy boxes of 8..400 pixels inside a width x height image."""
    size = rng.uniform(8, 400, (n, 2)) * [min(1, width / 400), min(1, height / 400)]
    corner = rng.uniform(0, 1, (n, 2)) * ([width, height] - size)
    return np.concatenate([corner, corner + size], axis=1).astype(np.float32)


def synthetic_image(rng: np.random.Generator, image_id: int, num_classes: int = 150,
                    num_predicates: int = 50, num_boxes: int = 100, num_rows: int = 300) -> tuple[dict, dict]:
    """One (GT, prediction) pair with realistic sizes (R@100 of the set is about 0.2)."""
    width, height = rng.uniform(500, 1024, 2)
    num_gt = 1 + rng.poisson(10)
    gt_boxes = _random_boxes(rng, num_gt, width, height)
    gt_labels = rng.integers(0, num_classes, num_gt)
    num_rels = 1 + rng.poisson(5)
    gt_pairs = rng.integers(0, num_gt, (num_rels, 2))
    gt_predicates = np.minimum(rng.geometric(0.15, num_rels) - 1, num_predicates - 1)  # long-tailed
    gt = {"boxes": gt_boxes, "labels": gt_labels.astype(np.int64),
          "relations": np.column_stack([gt_pairs, gt_predicates]).astype(np.int64)}

    # predicted objects: a jittered copy of each GT object (label right 75% of the time), then noise
    jitter = rng.normal(0, 0.05, (num_gt, 4)) * np.tile(gt_boxes[:, 2:] - gt_boxes[:, :2], 2)
    copies = (gt_boxes + jitter).astype(np.float32)
    copy_labels = np.where(rng.random(num_gt) < 0.75, gt_labels, rng.integers(0, num_classes, num_gt))
    boxes = np.concatenate([copies, _random_boxes(rng, num_boxes - num_gt, width, height)])
    labels = np.concatenate([copy_labels, rng.integers(0, num_classes, num_boxes - num_gt)])
    scores = rng.uniform(0.05, 1, num_boxes).astype(np.float32)

    # relation rows: the GT pairs (on the copies) and random pairs, softmax scores, ranked by r*s*o
    pairs = rng.integers(0, num_boxes, (num_rows, 2))
    pairs[: 2 * num_rels] = np.tile(gt_pairs, (2, 1))
    logits = rng.normal(0, 2, (num_rows, num_predicates + 1))
    logits[np.arange(num_rels), gt_predicates] += 5
    rel_scores = np.exp(logits - logits.max(1, keepdims=True))
    rel_scores = (rel_scores / rel_scores.sum(1, keepdims=True)).astype(np.float32)
    triplet_scores = rel_scores[:, :-1].max(1) * scores[pairs[:, 0]] * scores[pairs[:, 1]]
    order = np.argsort(-triplet_scores, kind="stable")
    prediction = {"image_id": image_id, "boxes": boxes, "labels": labels.astype(np.int64), "scores": scores,
                  "rel_pairs": pairs[order].astype(np.int64), "rel_scores": rel_scores[order],
                  "triplet_scores": triplet_scores[order]}
    return gt, prediction


def synthetic_evaluation_set(num_images: int, seed: int = 0,
                             num_predicates: int = 50) -> tuple[list[tuple[dict, dict]], np.ndarray]:
    """(GT, prediction) pairs and a 0-based zero-shot triplet list ([Z, 3]) hitting ~10% of GT rows."""
    rng = np.random.default_rng(seed)
    images = [synthetic_image(rng, i, num_predicates=num_predicates) for i in range(num_images)]
    triplets = np.concatenate([np.column_stack([gt["labels"][gt["relations"][:, 0]],
                                                gt["labels"][gt["relations"][:, 1]],
                                                gt["relations"][:, 2]]) for gt, _ in images])
    zero_shot = np.unique(triplets[rng.random(len(triplets)) < 0.1], axis=0)
    return images, zero_shot


def _difference(a: float, b: float) -> float:
    """|a - b|, 0 when both are NaN, inf when only one is."""
    if np.isnan(a) or np.isnan(b):
        return 0.0 if np.isnan(a) and np.isnan(b) else float("inf")
    return abs(a - b)


def bench_metrics(num_images: int = 5000, seed: int = 0, oracle: Oracle | None = None,
                  iou_convention: str = "isg") -> dict:
    """Seconds of the vectorised metrics (and of ``oracle``, if given) on the same synthetic images.

    Returns num_images, fast_seconds, fast_ms_per_image and, with an oracle, oracle_seconds, speedup
    (oracle / fast) and max_abs_difference over the ``sgdet`` numbers (NaN equal to NaN).
    """
    images, zero_shot = synthetic_evaluation_set(num_images, seed)
    start = time.perf_counter()
    fast = scene_graph_scores(images, 50, zero_shot, iou_convention).sgdet()
    fast_seconds = time.perf_counter() - start
    result = {"num_images": num_images, "fast_seconds": fast_seconds,
              "fast_ms_per_image": 1000 * fast_seconds / num_images, "sgdet": fast}
    if oracle is not None:
        start = time.perf_counter()
        reference = oracle(images, 50, zero_shot, iou_convention)
        oracle_seconds = time.perf_counter() - start
        result.update({"oracle_seconds": oracle_seconds, "speedup": oracle_seconds / fast_seconds,
                       "max_abs_difference": max(_difference(fast[k], reference[k]) for k in fast)})
    return result


def bench_box_ap(num_images: int = 5000, seed: int = 0, compare: bool = True) -> dict:
    """Seconds of the COCO box AP (faster-coco-eval) on the synthetic images, and with ``compare`` of
    pycocotools on the same ones: speedup and the largest difference of the six AP numbers."""
    images, _ = synthetic_evaluation_set(num_images, seed)
    result: dict = {"num_images": num_images}
    for backend in ("faster", "pycocotools") if compare else ("faster",):
        evaluator = CocoBoxEvaluator(backend)
        start = time.perf_counter()
        for gt, prediction in images:
            evaluator.add(prediction["image_id"], gt["boxes"], gt["labels"], prediction["boxes"],
                          prediction["labels"], prediction["scores"])
        bbox = evaluator.summarize()
        seconds = time.perf_counter() - start
        result[backend] = {"seconds": seconds, "ms_per_image": 1000 * seconds / num_images, "bbox": bbox}
    if compare:
        result["speedup"] = result["pycocotools"]["seconds"] / result["faster"]["seconds"]
        result["max_abs_difference"] = max(_difference(result["faster"]["bbox"][k], result["pycocotools"]["bbox"][k])
                                           for k in result["faster"]["bbox"])
    return result


def synthetic_model_outputs(rng: np.random.Generator, gt: Mapping[str, np.ndarray], image_size: tuple[int, int],
                            orig_size: tuple[int, int], num_queries: int = 300, num_classes: int = 150,
                            num_predicates: int = 50) -> dict:
    """IterativeSG outputs of one image (batch of 1) at the reference's sizes: 300 relation queries,
    subject/object logits [1, Q, K + 1], predicate logits [1, Q, R + 1], normalised cxcywh boxes [1, Q, 4].

    Boxes are jittered copies of the GT boxes (each used by several queries, so that the entity merge has
    real duplicates to merge) and random boxes; the logits favour the GT labels for the copies.
    """
    import torch

    height, width = orig_size
    scale = np.array([width, height, width, height], dtype=np.float32)
    outputs = {}
    for role in ("sub", "obj"):
        picks = rng.integers(0, len(gt["boxes"]), num_queries)
        boxes = gt["boxes"][picks] + rng.normal(0, 4, (num_queries, 4))
        random = rng.random(num_queries) < 0.3
        boxes[random] = _random_boxes(rng, int(random.sum()), width, height)
        boxes = np.clip(boxes, 0, scale)
        cxcywh = np.column_stack([(boxes[:, :2] + boxes[:, 2:]) / 2, np.abs(boxes[:, 2:] - boxes[:, :2]) + 1])
        outputs[f"pred_{role}_boxes"] = torch.from_numpy((cxcywh / scale).astype(np.float32))[None]
        logits = rng.normal(0, 1, (num_queries, num_classes + 1)).astype(np.float32)
        logits[np.arange(num_queries), gt["labels"][picks]] += 4
        outputs[f"pred_{role}_logits"] = torch.from_numpy(logits)[None]
    outputs["pred_rel_logits"] = torch.from_numpy(
        rng.normal(0, 2, (1, num_queries, num_predicates + 1)).astype(np.float32))
    return outputs


def bench_evaluate(num_images: int = 1000, seed: int = 0, folder: str | None = None, batch_size: int = 8) -> dict:
    """Milliseconds per image of the evaluation's work after the model, on one thread: the
    post-processing of IterativeSG outputs (300 queries, batches of ``batch_size`` as the evaluation
    runs them), writing the predictions file, reading it back and both metrics (scene-graph recalls and
    COCO box AP), on synthetic VG-sized images.

    ``ms_per_image`` is this process's CPU time (what the goal is about, and what other work on a busy
    machine does not inflate); ``wall_ms_per_image`` the elapsed time (equal on an idle core). The recall
    and AP of the synthetic outputs are returned too, to show that the work measured is the real one."""
    import tempfile

    import torch

    from itersg.evaluation.metrics import compute_metrics
    from itersg.evaluation.predictions import PredictionsReader, PredictionsWriter
    from itersg.models.postprocess import postprocess_scene_graphs

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    images, zero_shot = synthetic_evaluation_set(num_images, seed)
    ground_truth = {i: gt for i, (gt, _) in enumerate(images)}
    sizes = [(int(rng.integers(375, 1024)), int(rng.integers(500, 1280))) for _ in images]
    outputs = [synthetic_model_outputs(rng, gt, (800, 1066), size) for (gt, _), size in zip(images, sizes)]
    cpu_seconds, wall_seconds = {}, {}

    @contextlib.contextmanager
    def timed(step: str) -> Iterator[None]:
        cpu, wall = time.process_time(), time.perf_counter()
        yield
        cpu_seconds[step], wall_seconds[step] = time.process_time() - cpu, time.perf_counter() - wall

    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = Path(tmp) / "predictions.h5"
        starts = range(0, num_images, batch_size)
        batches = [{key: torch.cat([out[key] for out in outputs[first:first + batch_size]]) for key in outputs[0]}
                   for first in starts]
        predictions = []
        with timed("postprocess"):
            for first, batch in zip(starts, batches):
                ids = list(range(first, min(first + batch_size, num_images)))
                predictions += postprocess_scene_graphs(batch, [(800, 1066)] * len(ids), sizes[ids[0]:ids[-1] + 1],
                                                        ids)
        with timed("write_predictions"), PredictionsWriter(path, variant="bench", iteration=0, split="test") as writer:
            for prediction in predictions:
                writer.add(prediction)
        file_bytes = path.stat().st_size
        with timed("read_and_metrics"), PredictionsReader(path) as reader:
            metrics = compute_metrics(reader, ground_truth, zero_shot + 1, [f"p{i}" for i in range(50)])

    def per_image(seconds: dict[str, float]) -> dict[str, float]:
        ms = {name: 1000 * value / num_images for name, value in seconds.items()}
        return {**ms, "total": sum(ms.values())}

    return {"num_images": num_images, "threads": 1, "ms_per_image": per_image(cpu_seconds),
            "wall_ms_per_image": per_image(wall_seconds),
            "predictions_bytes_per_image": file_bytes / num_images,
            "R@100": metrics["sgdet"]["R@100"], "AP": metrics["bbox"]["AP"]}
