"""The report's gallery: a few test images with each variant's scene graph beside the ground truth.

Which images: ``report.gallery.images`` of the images that every shown variant predicted, in a seeded
order (``report.gallery.seed``); then up to ``EXTRA`` where the variants' per-image R@50 differ most and
up to ``EXTRA`` with the most tail-predicate relations, both picked among the first ``POOL`` images of
the same order. Per variant the latest evaluated checkpoint is shown; its rows are read from the
predictions file beside its metrics file (nothing is run again).

Hits follow the R@K rule, through the same functions as the metrics (``sg_metrics.entity_matches`` and
``triplet_hits``: subject class, object class and predicate equal, both boxes IoU >= 0.5). A predicted
triplet is a hit when it matches some ground-truth relation; a ground-truth relation is recalled by a
variant when one of that variant's first ``RECALL_K`` triplets matches it (so the share of recalled
relations is the image's R@50).

Size: thumbnails have a longer side of ``THUMB_SIDE`` px and are embedded as JPEG data URIs; images stop
being added once those reach ``MAX_BYTES`` (as embedded, base64), so a report stays under 6 MB.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from itersg.data.image_io import read_image
from itersg.data.vg150 import VG150Index, Vocabulary, image_ground_truth, load_vocabulary
from itersg.errors import UserError
from itersg.evaluation.predictions import PredictionsReader
from itersg.evaluation.sg_metrics import entity_matches, triplet_hits
from itersg.files import format_size
from itersg.report.figures import Image
from itersg.report.inputs import PrepareSummary
from itersg.report.tables import ResultRow, predicate_order
from itersg.visualize import draw

PREDICTIONS_FILE = "predictions.h5"
TOP = 10            # predicted triplets listed per variant
RECALL_K = 50       # a ground-truth relation is recalled when one of the first K triplets matches it
POOL = 200          # images searched for disagreement and tail predicates
EXTRA = 3           # images added for each of the two reasons
THUMB_SIDE = 240    # px, longer side of a thumbnail
JPEG_QUALITY = 80
MAX_BYTES = 4_000_000  # the gallery's embedded thumbnails (data URIs), in bytes of HTML


@dataclass(frozen=True)
class Graph:
    """One picture with its triplet list; names and colours are per object of this graph."""

    image: Image
    names: list[str]
    colors: list[str]
    triplets: list[draw.Triplet]


@dataclass(frozen=True)
class VariantGraph:
    """A variant's prediction on one image: its top triplets, R@50 and which GT relations it recalled."""

    variant: str
    iteration: int
    graph: Graph
    recall: float | None  # None: no predicted triplet (R@K does not count the image)
    recalled: list[bool]


@dataclass(frozen=True)
class GalleryImage:
    image_id: int
    reason: str
    truth: Graph
    variants: list[VariantGraph]


@dataclass
class Gallery:
    """The section's content; ``missing`` says why it is empty."""

    images: list[GalleryImage] = field(default_factory=list)
    missing: str = ""
    notes: list[str] = field(default_factory=list)
    bytes: int = 0


# ------------------------------------------------------------------------------------------ matching


def match_triplets(gt: Mapping[str, np.ndarray], prediction: Mapping[str, Any], num_predicates: int) -> np.ndarray:
    """[G, P] bool: predicted relation row p matches ground-truth relation g by the R@K rule.

    gt: ``boxes`` [N, 4], ``labels`` [N], ``relations`` [G, 3]; prediction: the predictions file's fields
    (rows ranked best first; a row's predicate is its best real predicate, as R@K reads it).
    """
    relations, pairs = gt["relations"], prediction["rel_pairs"]
    if len(relations) == 0 or len(pairs) == 0:
        return np.zeros((len(relations), len(pairs)), dtype=bool)
    predicates = prediction["rel_scores"][:, :num_predicates].argmax(1)
    sub_ok, obj_ok = entity_matches(gt["boxes"], gt["labels"], relations, prediction["boxes"], prediction["labels"])
    return triplet_hits(sub_ok, obj_ok, relations[:, 2], pairs[:, 0], pairs[:, 1], predicates)


def image_recall(hits: np.ndarray, k: int = RECALL_K) -> tuple[float | None, np.ndarray]:
    """(share of GT relations matched by the first k rows, recalled [G]) from ``match_triplets``'s [G, P].

    The share is None when there is no GT relation or no predicted row (R@K skips such images).
    """
    recalled = hits[:, :k].any(1)
    if hits.shape[0] == 0 or hits.shape[1] == 0:
        return None, recalled
    return float(recalled.mean()), recalled


# ----------------------------------------------------------------------------------------- selection


def seeded_order(image_ids: Sequence[int] | np.ndarray, seed: int) -> list[int]:
    """The image ids in a random order fixed by ``seed`` (independent of the order they are given in)."""
    ids = np.unique(np.asarray(image_ids, dtype=np.int64))
    return [int(i) for i in np.random.default_rng(seed).permutation(ids)]


def most_disagreeing(recalls: Mapping[int, Sequence[float | None]], exclude: set[int], count: int) -> list[int]:
    """Up to ``count`` image ids with the largest spread (max - min) of the variants' per-image recall.

    ``recalls`` is in pool order; images with fewer than two defined recalls or no spread are skipped.
    """
    spreads = []
    for position, (image_id, values) in enumerate(recalls.items()):
        defined = [v for v in values if v is not None]
        if image_id not in exclude and len(defined) > 1 and max(defined) > min(defined):
            spreads.append((-(max(defined) - min(defined)), position, image_id))
    return [image_id for _, _, image_id in sorted(spreads)[:count]]


def most_tail(tail_counts: Mapping[int, int], exclude: set[int], count: int) -> list[int]:
    """Up to ``count`` image ids with the most tail-predicate relations (ties: pool order)."""
    ranked = sorted((-n, position, image_id) for position, (image_id, n) in enumerate(tail_counts.items())
                    if n > 0 and image_id not in exclude)
    return [image_id for _, _, image_id in ranked[:count]]


def tail_predicates(prepare: PrepareSummary | None, vocabulary: Vocabulary) -> set[int]:
    """0-based ids of the tail third of the predicates by training frequency (the report's groups)."""
    if prepare is None:
        return set()
    order = predicate_order(vocabulary.predicates, prepare)
    tail = {name for name, group in zip(order.names, order.groups, strict=True) if group == "tail"}
    return {i for i, name in enumerate(vocabulary.predicates) if name in tail}


# ------------------------------------------------------------------------------------------ pictures


def _thumbnail(image: torch.Tensor, boxes: np.ndarray, names: list[str], colors: list[str], used: list[int],
               alt: str) -> tuple[Image, int]:
    """A JPEG thumbnail with the ``used`` objects' boxes (original pixels) drawn; and its data URI's length."""
    small, scale = draw.resize_longer_side(image, THUMB_SIDE)
    scaled = torch.as_tensor(np.asarray(boxes, dtype=np.float32)[used]).reshape(-1, 4) * scale
    small = draw.draw_boxes(small, scaled, [names[i] for i in used], [colors[i] for i in used], line_width=2,
                            font_size=10)
    uri = draw.data_uri(draw.encode(draw.to_pil(small), "JPEG", JPEG_QUALITY), "JPEG")
    return Image(uri, alt, int(small.shape[-1])), len(uri)


def _used(triplets: Sequence[draw.Triplet]) -> list[int]:
    return sorted({i for t in triplets for i in (t.subject, t.object)})


def truth_graph(image_id: int, image: torch.Tensor, gt: Mapping[str, np.ndarray],
                vocabulary: Vocabulary) -> tuple[Graph, int]:
    """The ground truth's picture (the objects of its relations) and its relation list."""
    names = draw.object_names(gt["labels"], vocabulary.classes)
    colors = draw.object_colors(len(names))
    triplets = [draw.Triplet(int(s), vocabulary.predicates[int(p)], int(o)) for s, o, p in gt["relations"]]
    picture, size = _thumbnail(image, gt["boxes"], names, colors, _used(triplets),
                               f"Test image {image_id}: ground-truth boxes")
    return Graph(picture, names, colors, triplets), size


def variant_graph(image_id: int, image: torch.Tensor, gt: Mapping[str, np.ndarray], prediction: Mapping[str, Any],
                  row: ResultRow, vocabulary: Vocabulary) -> tuple[VariantGraph, int]:
    """A variant's top ``TOP`` triplets with hit marks, its picture, R@50 and recalled GT relations."""
    hits = match_triplets(gt, prediction, len(vocabulary.predicates))
    recall, recalled = image_recall(hits)
    names = draw.object_names(prediction["labels"], vocabulary.classes)
    colors = draw.object_colors(len(names))
    predicates = prediction["rel_scores"][:, :len(vocabulary.predicates)].argmax(1)
    triplets = [draw.Triplet(int(s), vocabulary.predicates[int(p)], int(o), float(score), bool(hits[:, rank].any()))
                for rank, ((s, o), p, score) in enumerate(zip(prediction["rel_pairs"][:TOP], predicates[:TOP],
                                                              prediction["triplet_scores"][:TOP], strict=True))]
    picture, size = _thumbnail(image, prediction["boxes"], names, colors, _used(triplets),
                               f"Test image {image_id}: boxes predicted by {row.variant} @ {row.iteration}")
    graph = Graph(picture, names, colors, triplets)
    return VariantGraph(row.variant, row.iteration, graph, recall, [bool(r) for r in recalled]), size


# ------------------------------------------------------------------------------------------- section


@dataclass
class _Sources:
    """The opened inputs: per variant its row and predictions file; the ground truth's index."""

    rows: dict[str, ResultRow]
    readers: dict[str, PredictionsReader]
    index: VG150Index
    positions: dict[int, int]
    vocabulary: Vocabulary

    def ground_truth(self, image_id: int) -> dict[str, Any]:
        return image_ground_truth(self.index, self.positions[image_id])

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()


def _open(latest: Mapping[str, ResultRow], data: Mapping[str, Any]) -> tuple[_Sources | None, list[str]]:
    """Open the predictions file of each variant's latest evaluation (beside its metrics file)."""
    rows, readers, notes = {}, {}, []
    for variant, row in latest.items():
        path = Path(row.metrics.path).parent / PREDICTIONS_FILE
        if not path.is_file():
            notes.append(f"{variant}: no predictions file beside {row.metrics.path}; not in the gallery")
            continue
        rows[variant], readers[variant] = row, PredictionsReader(path)
    if not readers:
        return None, notes
    try:
        splits = {reader.split for reader in readers.values()}
        if len(splits) > 1:
            raise UserError(f"the predictions files are for different splits ({sorted(splits)}); evaluate every "
                            "variant on the same split (evaluate.split)")
        index = VG150Index(data["root"], splits.pop(), data["num_val_images"], filter_duplicate_rels=False)
        vocabulary = load_vocabulary(data["root"])
    except UserError:
        for reader in readers.values():
            reader.close()
        raise
    positions = {int(image_id): i for i, image_id in enumerate(index.image_ids)}
    return _Sources(rows, readers, index, positions, vocabulary), notes


def _choose(sources: _Sources, count: int, seed: int, tail: set[int]) -> list[tuple[int, str]]:
    """(image id, reason) of the gallery's images, in the order shown."""
    common = set(sources.positions)
    for reader in sources.readers.values():
        common &= {int(i) for i in reader.image_ids}
    order = seeded_order(sorted(common), seed)
    chosen = [(image_id, "drawn at random") for image_id in order[:count]]
    if count == 0:
        return chosen
    shown = {image_id for image_id, _ in chosen}
    pool = order[:POOL]
    gts = {image_id: sources.ground_truth(image_id) for image_id in pool}
    if len(sources.readers) > 1:
        recalls = {image_id: [image_recall(match_triplets(gts[image_id], reader.prediction(image_id),
                                                          reader.num_predicates))[0]
                              for reader in sources.readers.values()] for image_id in pool}
        for image_id in most_disagreeing(recalls, shown, EXTRA):
            values = ", ".join(f"{variant} {'—' if r is None else f'{100 * r:.0f}%'}"
                               for variant, r in zip(sources.readers, recalls[image_id], strict=True))
            chosen.append((image_id, f"the variants disagree most (R@{RECALL_K} on this image: {values})"))
            shown.add(image_id)
    counts = {image_id: int(np.isin(gts[image_id]["relations"][:, 2], list(tail)).sum()) for image_id in pool}
    for image_id in most_tail(counts, shown, EXTRA):
        names = sorted({sources.vocabulary.predicates[int(p)] for p in gts[image_id]["relations"][:, 2] if p in tail})
        chosen.append((image_id, f"tail predicates: {', '.join(names)}"))
    return chosen


def _gallery_image(sources: _Sources, image_id: int, reason: str) -> tuple[GalleryImage, int]:
    image = read_image(sources.index.image_path(sources.positions[image_id]))
    gt = sources.ground_truth(image_id)
    truth, total = truth_graph(image_id, image, gt, sources.vocabulary)
    graphs = []
    for variant, reader in sources.readers.items():
        graph, size = variant_graph(image_id, image, gt, reader.prediction(image_id), sources.rows[variant],
                                    sources.vocabulary)
        graphs.append(graph)
        total += size
    return GalleryImage(image_id, reason, truth, graphs), total


def build_gallery(latest: Mapping[str, ResultRow], params: Mapping[str, Any] | None,
                  prepare: PrepareSummary | None, max_bytes: int = MAX_BYTES) -> Gallery:
    """The gallery of the latest evaluation of each variant, as ``params["report"]["gallery"]`` asks.

    Images are added in the order chosen until their thumbnails reach ``max_bytes`` of HTML.
    """
    if params is None:
        return Gallery(missing="no params file given (--params): the dataset and report.gallery are unknown")
    settings = params["report"]["gallery"]
    if settings["images"] == 0:
        return Gallery(missing="report.gallery.images is 0")
    if not latest:
        return Gallery(missing="no evaluated checkpoint")
    sources, notes = _open(latest, params["data"])
    if sources is None:
        return Gallery(missing="no predictions file beside the metrics files", notes=notes)
    try:
        tail = tail_predicates(prepare, sources.vocabulary)
        if prepare is None:
            notes.append("no prepare summary (--prepare): no images picked for tail predicates")
        if len(sources.readers) == 1:
            notes.append("one variant only: no images picked for disagreement between variants")
        gallery = Gallery(notes=notes)
        chosen = _choose(sources, settings["images"], settings["seed"], tail)
        for image_id, reason in chosen:
            item, size = _gallery_image(sources, image_id, reason)
            if gallery.bytes + size > max_bytes:
                gallery.notes.append(f"{len(gallery.images)} of {len(chosen)} images shown: the next one would take "
                                     f"the thumbnails past the cap of {format_size(max_bytes)}")
                break
            gallery.images.append(item)
            gallery.bytes += size
        return gallery
    finally:
        sources.close()
