"""COCO box AP of the predicted objects, as IterativeSG reports it (detectron2 ``COCOEvaluator``).

Ground truth = every annotated object of each evaluated image (also objects in no relation), boxes at
original resolution and not clipped, written as XYWH (rounded to 3 decimals, as detectron2's COCO
conversion does), area = w·h, 0-based category ids, ``iscrowd`` 0. Detections = the predictions file's
boxes, labels and scores, pooled over images. pycocotools does the rest (``maxDets`` 100 per image and
category, IoU thresholds 0.50:0.95). Results are in percent; NaN where COCO gives -1 (no GT in the
area range).

The COCO evaluation itself runs in faster-coco-eval (``COCOeval_faster``, a C++ port of pycocotools'
``COCOeval`` with the same algorithm): the tests require AP, AP50, AP75, APs, APm and APl equal to
pycocotools' on the same inputs up to the last bits of the final mean (at most 1e-12 percent: its
summation order differs), and it is many times faster on VG-sized test sets (``itersg bench box-ap``,
docs/benchmarks.md). Its console output goes to this module's logger at DEBUG level.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

BOX_AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
AREA_RANGES = {"APs": (0, 32**2), "APm": (32**2, 96**2), "APl": (96**2, 1e10)}  # COCOeval.Params
logger = logging.getLogger(__name__)


def _xywh(boxes: np.ndarray) -> np.ndarray:
    """[N, 4] float32 xyxy -> xywh (float32 subtraction, as detectron2's BoxMode.convert)."""
    boxes = np.asarray(boxes, dtype=np.float32)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _coco_backend(name: str) -> tuple[type, Callable]:
    """(COCO class, COCOeval factory) of ``name``: "faster" (faster-coco-eval) or "pycocotools"."""
    if name == "pycocotools":  # the reference implementation, for comparisons (a test dependency)
        from pycocotools.coco import COCO as PyCOCO
        from pycocotools.cocoeval import COCOeval

        return PyCOCO, lambda gt, dt: COCOeval(gt, dt, "bbox")
    return COCO, lambda gt, dt: COCOeval_faster(gt, dt, "bbox", print_function=print)


class CocoBoxEvaluator:
    """Pool per-image GT objects and detections with :meth:`add`; :meth:`summarize` runs COCOeval.

    ``backend`` "faster" (default) or "pycocotools" (the reference, for comparisons and benchmarks).
    """

    def __init__(self, backend: str = "faster") -> None:
        self.backend = backend
        self._images: list[int] = []
        self._gt: list[dict] = []
        self._detections: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per image: xyxy, labels, scores
        self._categories: set[int] = set()

    def add(self, image_id: int, gt_boxes: np.ndarray, gt_labels: np.ndarray,
            boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> None:
        """One image: GT objects [N, 4] xyxy + [N] classes; detections [M, 4] xyxy + [M] classes + [M]."""
        image_id = int(image_id)
        self._images.append(image_id)
        gt_xywh = _xywh(gt_boxes)
        areas = (gt_xywh[:, 2] * gt_xywh[:, 3]).tolist()
        for box, label, area in zip(gt_xywh.tolist(), np.asarray(gt_labels).tolist(), areas):
            self._gt.append({"id": len(self._gt) + 1, "image_id": image_id, "category_id": label,
                             "bbox": [round(v, 3) for v in box], "area": area, "iscrowd": 0})
        self._detections.append((np.asarray(boxes), np.asarray(labels), np.asarray(scores)))
        self._categories.update(np.asarray(gt_labels).tolist())
        self._categories.update(np.asarray(labels).tolist())

    def _detection_annotations(self) -> list[dict]:
        """The pooled detections as COCO result annotations, with what ``loadRes`` adds for boxes (id from
        1, area = w·h, iscrowd 0), built from whole columns at once (per-image lists cost 3x more)."""
        if not self._detections:
            return []
        image_ids = np.repeat(self._images, [len(labels) for _, labels, _ in self._detections])
        xywh = _xywh(np.concatenate([boxes.reshape(-1, 4) for boxes, _, _ in self._detections]))
        areas = xywh[:, 2].astype(np.float64) * xywh[:, 3]
        labels = np.concatenate([labels for _, labels, _ in self._detections])
        scores = np.concatenate([scores for _, _, scores in self._detections])
        return [{"id": i, "image_id": image, "category_id": label, "bbox": box, "score": score, "area": area,
                 "iscrowd": 0}
                for i, (image, label, box, score, area) in enumerate(zip(
                    image_ids.tolist(), labels.tolist(), xywh.tolist(), scores.tolist(), areas.tolist()), 1)]

    def summarize(self) -> dict[str, float]:
        """AP, AP50, AP75, APs, APm, APl in percent (NaN where undefined)."""
        detections = self._detection_annotations()
        if not detections:
            return self._without_detections()
        log = io.StringIO()
        coco_class, make_eval = _coco_backend(self.backend)
        with contextlib.redirect_stdout(log):
            coco_gt, coco_dt = coco_class(), coco_class()
            images, categories = [{"id": i} for i in self._images], [{"id": c} for c in sorted(self._categories)]
            coco_gt.dataset = {"images": images, "annotations": self._gt, "categories": categories}
            coco_gt.createIndex()
            if self.backend == "pycocotools":  # the reference's path, as it is timed in benchmarks
                coco_dt = coco_gt.loadRes([{k: d[k] for k in ("image_id", "category_id", "bbox", "score")}
                                           for d in detections])
            else:
                # Without the box-outline segmentation `loadRes` also makes, which box AP never reads.
                coco_dt.dataset = {"images": images, "annotations": detections, "categories": categories}
                coco_dt.createIndex()
            coco_eval = make_eval(coco_gt, coco_dt)
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        logger.debug("COCOeval output:\n%s", log.getvalue())
        return {key: float(v * 100) if v >= 0 else float("nan")
                for key, v in zip(BOX_AP_KEYS, coco_eval.stats[:6])}

    def _without_detections(self) -> dict[str, float]:
        """pycocotools cannot load an empty result list: AP is 0 where there is GT to find, else NaN."""
        areas = np.array([gt["area"] for gt in self._gt])
        out = {key: 0.0 if areas.size else float("nan") for key in ("AP", "AP50", "AP75")}
        for key, (low, high) in AREA_RANGES.items():
            out[key] = 0.0 if ((areas >= low) & (areas <= high)).any() else float("nan")
        return out
