"""`itersg predict`: the scene graph of any image file, as JSON and as a picture.

Each image is decoded with its EXIF orientation applied (``read_image``), resized as the evaluation
resizes (``data.test_size`` / ``data.test_max_size``), run through the model and post-processed as in
the evaluation; boxes are in pixels of the decoded (upright) original. Per image ``OUT/<stem>.json``
holds every object and the best ``top`` triplets at or above ``threshold``; ``OUT/<stem>.png`` shows
the boxes of the objects of those triplets beside the list ``subject —predicate→ object``. An image
that cannot be read is one error line and the others are still processed.

May import: itersg.errors, itersg.files, itersg.data, itersg.evaluation, itersg.models, itersg.visualize.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
import yaml

from itersg.data.image_io import read_image
from itersg.data.transforms import apply, eval_transforms
from itersg.data.vg150 import Vocabulary, load_vocabulary
from itersg.errors import UserError
from itersg.evaluation.runner import default_device, load_model
from itersg.files import atomic_output, check_writable_folder, holds_only
from itersg.models.postprocess import postprocess_scene_graphs
from itersg.visualize import draw

DRAW_SIDE = (480, 1024)  # the picture's longer side in pixels: small images are enlarged, large ones shrunk
JSON_FORMAT = "itersg-scene-graph"  # its JSON schema: itersg/schemas/scene_graph.schema.yaml
PICTURE_SOFTWARE = "itersg predict"  # the PNG's ``Software`` text: marks it as written here


def scene_graph_schema() -> dict[str, Any]:
    """The JSON schema of the files ``itersg predict`` writes."""
    return yaml.safe_load(files("itersg").joinpath("schemas/scene_graph.schema.yaml").read_text())


@dataclass(frozen=True)
class Predictor:
    """A loaded model with what it needs to turn an image file into a scene graph."""

    model: torch.nn.Module
    vocabulary: Vocabulary
    test_size: int
    test_max_size: int
    device: torch.device

    @torch.inference_mode()
    def scene_graph(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 [3, H, W] -> the evaluation's Predictions fields, boxes in pixels of ``image``."""
        empty = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, 3, dtype=torch.long)
        resized = apply(eval_transforms(self.test_size, self.test_max_size), image, *empty)[0]
        outputs = self.model([resized.to(self.device)])
        return postprocess_scene_graphs(outputs, [resized.shape[-2:]], [image.shape[-2:]])[0]


def load_predictor(params: Mapping[str, Any], variant: str, checkpoint: str | Path,
                   device: torch.device | None = None) -> Predictor:
    """The variant's model with the checkpoint's weights; names from ``data.root``'s dicts file."""
    data = params["data"]
    vocabulary = load_vocabulary(data["root"])
    device = device or default_device()
    model = load_model(params, variant, checkpoint, len(vocabulary.classes), len(vocabulary.predicates), device)
    return Predictor(model, vocabulary, data["test_size"], data["test_max_size"], device)


def top_triplets(graph: Mapping[str, torch.Tensor], top: int, threshold: float) -> list[dict[str, Any]]:
    """The first ``top`` relation rows (ranked best first) with a triplet score >= ``threshold``.

    The predicate of a row is its best real predicate (as R@K reads it).
    """
    predicates = graph["rel_scores"][:, :-1].argmax(1)
    rows = []
    for row, (pair, predicate, score) in enumerate(zip(graph["rel_pairs"], predicates, graph["triplet_scores"],
                                                       strict=True)):
        if len(rows) == top or float(score) < threshold:
            break
        rows.append({"rank": row + 1, "subject": int(pair[0]), "object": int(pair[1]),
                     "predicate": int(predicate), "score": float(score)})
    return rows


def scene_graph_document(path: Path, image: torch.Tensor, graph: Mapping[str, torch.Tensor],
                         triplets: Sequence[dict[str, Any]], vocabulary: Vocabulary, variant: str,
                         checkpoint: Path) -> dict[str, Any]:
    """The JSON of one image: every object (box in original pixels) and the top triplets."""
    names = vocabulary.classes
    objects = [{"index": i, "box": [round(float(v), 2) for v in box], "label": int(label),
                "name": names[int(label)], "score": round(float(score), 4)}
               for i, (box, label, score) in enumerate(zip(graph["boxes"], graph["labels"], graph["scores"],
                                                           strict=True))]
    return {
        "format": JSON_FORMAT, "format_version": 1, "image": str(path),
        "width": int(image.shape[-1]), "height": int(image.shape[-2]),
        "variant": variant, "checkpoint": str(checkpoint), "objects": objects,
        "triplets": [{**t, "predicate_name": vocabulary.predicates[t["predicate"]], "score": round(t["score"], 4)}
                     for t in triplets],
    }


def graph_picture(image: torch.Tensor, document: Mapping[str, Any]) -> bytes:
    """PNG bytes: the boxes of the objects in the document's triplets, beside the list of triplets.

    Colours follow the object index in the JSON, so they are stable for the image whatever ``top`` is.
    """
    objects, triplets = document["objects"], document["triplets"]
    colors = draw.object_colors(len(objects))
    names = draw.object_names(range(len(objects)), [o["name"] for o in objects])
    used = sorted({i for t in triplets for i in (t["subject"], t["object"])})
    side = min(max(max(image.shape[-2:]), DRAW_SIDE[0]), DRAW_SIDE[1])
    picture, scale = draw.resize_longer_side(image, side)
    boxes = torch.tensor([objects[i]["box"] for i in used], dtype=torch.float32).reshape(-1, 4) * scale
    picture = draw.draw_boxes(picture, boxes, [names[i] for i in used], [colors[i] for i in used])
    rows = [draw.Triplet(t["subject"], t["predicate_name"], t["object"], t["score"]) for t in triplets]
    title = f"{Path(document['image']).name}: top {len(rows)} triplets ({document['variant']})"
    panel = draw.triplet_panel(rows, names, colors, picture.shape[-2], title)
    return draw.encode(draw.side_by_side(draw.to_pil(picture), panel), "PNG", text={"Software": PICTURE_SOFTWARE})


def is_prediction_folder(folder: Path) -> bool:
    """Whether ``folder`` holds only the JSON and PNG files of earlier runs: writing more there loses nothing."""
    return holds_only(folder, ("*.json", "*.png"), marks={JSON_FORMAT, PICTURE_SOFTWARE})


def output_paths(images: Sequence[Path], out: Path) -> list[tuple[Path, Path]]:
    """(JSON, PNG) per image: ``OUT/<stem>.json`` and ``OUT/<stem>.png``; two images may not share a stem."""
    seen: dict[str, Path] = {}
    for path in images:
        if path.stem in seen:
            raise UserError(f"{seen[path.stem]} and {path} would both write {out / path.stem}.json; rename one "
                            "or run them with different --out folders")
        seen[path.stem] = path
    return [(out / f"{p.stem}.json", out / f"{p.stem}.png") for p in images]


def predict_files(predictor: Predictor, images: Sequence[Path], out: Path, *, variant: str, checkpoint: Path,
                  top: int = 10, threshold: float = 0.0,
                  on_error: Callable[[UserError], None] | None = None) -> list[Path]:
    """Write the JSON and PNG of every readable image; returns the JSON paths written.

    An image that cannot be decoded is passed to ``on_error`` (default: raised) and the next one runs.
    """
    out = check_writable_folder(out)
    written = []
    for path, (json_path, png_path) in zip(images, output_paths(images, out), strict=True):
        try:
            if not path.is_file():
                raise UserError(f"{path}: no such image file; check the path")
            image = read_image(path)
        except UserError as error:
            if on_error is None:
                raise
            on_error(error)
            continue
        graph = predictor.scene_graph(image)
        triplets = top_triplets(graph, top, threshold)
        document = scene_graph_document(path, image, graph, triplets, predictor.vocabulary, variant, checkpoint)
        # both written before either is renamed into place: a failed write leaves neither
        with atomic_output(png_path) as png, atomic_output(json_path) as text:
            png.write(graph_picture(image, document))
            text.write((json.dumps(document, indent=1) + "\n").encode())
        written.append(json_path)
    return written
