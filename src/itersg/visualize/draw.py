"""Draw a scene graph: object boxes on the image (torchvision) and a triplet list beside it (PIL).

Every object of a graph has one colour, chosen by its index in the graph (``object_colors``), so a box,
its name and every triplet that mentions it share that colour in every picture of the same graph.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin
from torchvision.utils import draw_bounding_boxes

# Tableau-like colours that stay legible on photos and behind white text.
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#008080", "#f032e6", "#9a6324",
           "#800000", "#000075", "#808000", "#46f0f0")
ARROW = "—{}→"
# DejaVu Sans as matplotlib ships it: every machine with itersg has it, and it has ✓, ✗, — and →.
FONT_FILE = str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")


@dataclass(frozen=True)
class Triplet:
    """One line of a triplet list: subject and object are indices into the graph's objects."""

    subject: int
    predicate: str
    object: int
    score: float | None = None
    hit: bool | None = None  # None: not compared with a ground truth


def object_colors(num_objects: int) -> list[str]:
    """A colour per object index (stable: object i always gets ``PALETTE[i % len(PALETTE)]``)."""
    return [PALETTE[i % len(PALETTE)] for i in range(num_objects)]


def object_names(labels: Sequence[int], class_names: Sequence[str]) -> list[str]:
    """Readable object names: the class name, numbered when the class occurs more than once ("cup 2")."""
    names = [class_names[int(label)] for label in labels]
    seen: dict[str, int] = {}
    numbered = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        numbered.append(f"{name} {seen[name]}" if names.count(name) > 1 else name)
    return numbered


def triplet_text(triplet: Triplet, names: Sequence[str]) -> str:
    """``subject —predicate→ object`` (with the score when known)."""
    text = f"{names[triplet.subject]} {ARROW.format(triplet.predicate)} {names[triplet.object]}"
    return text if triplet.score is None else f"{text}  {triplet.score:.2f}"


def resize_longer_side(image: torch.Tensor, side: int) -> tuple[torch.Tensor, float]:
    """uint8 [3, H, W] -> uint8 [3, H', W'] with max(H', W') = ``side``, and the scale factor used."""
    height, width = image.shape[-2:]
    scale = side / max(height, width)
    size = [max(1, round(height * scale)), max(1, round(width * scale))]
    return F.resize(image, size, antialias=True), scale


def draw_boxes(image: torch.Tensor, boxes: torch.Tensor, names: Sequence[str], colors: Sequence[str],
               line_width: int = 2, font_size: int = 12) -> torch.Tensor:
    """uint8 [3, H, W] with the boxes [M, 4] (x1y1x2y2, pixels of ``image``) and their names drawn."""
    if len(boxes) == 0:
        return image
    return draw_bounding_boxes(image, boxes.float(), labels=list(names), colors=list(colors), width=line_width,
                               font=FONT_FILE, font_size=font_size, label_colors="white",
                               label_background_colors=list(colors), fill_labels=True)


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(FONT_FILE, size)


def triplet_panel(triplets: Sequence[Triplet], names: Sequence[str], colors: Sequence[str], height: int,
                  title: str, font_size: int = 14) -> Image.Image:
    """A white panel listing the triplets, one per line, subject and object in their colours.

    A line starts with ✓ (matches the ground truth) or ✗ (does not) when ``hit`` is known.
    """
    font, bold = _font(font_size), _font(font_size + 1)
    step = font_size + 6
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = [triplet_text(t, names) for t in triplets] or ["(no triplet)"]
    width = 24 + max(measure.textlength(line, font=font) for line in [*lines, title]) + 24
    panel = Image.new("RGB", (int(width), max(height, step * (len(lines) + 2))), "white")
    draw = ImageDraw.Draw(panel)
    draw.text((12, 8), title, fill="#1d2330", font=bold)
    for row, triplet in enumerate(triplets):
        _draw_triplet(draw, (12, 8 + step * (row + 1)), triplet, names, colors, font)
    if not triplets:
        draw.text((12, 8 + step), lines[0], fill="#667085", font=font)
    return panel


def _draw_triplet(draw: ImageDraw.ImageDraw, origin: tuple[int, int], triplet: Triplet, names: Sequence[str],
                  colors: Sequence[str], font: ImageFont.FreeTypeFont) -> None:
    x, y = origin
    mark = {True: ("✓ ", "#1c7c3c"), False: ("✗ ", "#b42318"), None: ("", "#1d2330")}[triplet.hit]
    parts = [(mark[0], mark[1]), (names[triplet.subject], colors[triplet.subject]),
             (f" {ARROW.format(triplet.predicate)} ", "#1d2330"), (names[triplet.object], colors[triplet.object])]
    if triplet.score is not None:
        parts.append((f"  {triplet.score:.2f}", "#667085"))
    for text, fill in parts:
        draw.text((x, y), text, fill=fill, font=font)
        x += draw.textlength(text, font=font)


def side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    """``left`` and ``right`` on one white canvas, top-aligned."""
    canvas = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), "white")
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    return canvas


def to_pil(image: torch.Tensor) -> Image.Image:
    """uint8 [3, H, W] -> PIL RGB image."""
    return F.to_pil_image(image)


def encode(image: Image.Image, image_format: str = "PNG", quality: int = 85,
           text: Mapping[str, str] | None = None) -> bytes:
    """The image file bytes (PNG with only the ``text`` chunks given; JPEG at ``quality``)."""
    buffer = io.BytesIO()
    if image_format == "JPEG":
        image.save(buffer, format="JPEG", quality=quality, optimize=True)
    elif text:
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
        image.save(buffer, format=image_format, optimize=True, pnginfo=info)
    else:
        image.save(buffer, format=image_format, optimize=True)
    return buffer.getvalue()


def data_uri(data: bytes, image_format: str) -> str:
    """A ``data:image/...;base64,`` URI of encoded image bytes."""
    return f"data:image/{image_format.lower()};base64,{base64.b64encode(data).decode('ascii')}"
