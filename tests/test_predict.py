"""`itersg predict` on image files: JSON by its schema, boxes inside the image, decodable PNGs, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch
from PIL import Image

from itersg.cli import main
from itersg.data.synth import generate
from itersg.models.registry import build_model
from itersg.predict import scene_graph_schema

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"hidden_dim": 32, "nheads": 2, "enc_layers": 1, "dec_layers": 2, "dim_feedforward": 64, "num_queries": 12,
         "backbone": {"small": True}, "aux_head": {"small": True}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """A synthetic dataset (the names), a tiny checkpoint and three images: JPEG, PNG, EXIF-rotated JPEG."""
    root = tmp_path_factory.mktemp("predict")
    data = generate(root / "vg", images=12, seed=2, image_size=72)
    torch.manual_seed(0)
    checkpoint = root / "model.pth"
    torch.save({"model": build_model("r101-detr", num_classes=12, num_predicates=7, overrides=SMALL).state_dict()},
               checkpoint)
    jpeg = sorted((data / "VG_100K").glob("*.jpg"))[0]
    png = root / "wide scene.png"
    Image.open(jpeg).convert("RGB").resize((150, 60)).save(png)
    rotated = root / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: shown rotated by 90 degrees
    Image.open(jpeg).convert("RGB").resize((96, 40)).save(rotated, exif=exif)
    settings = ["--params", str(ROOT / "params.yaml"), "--set", "mode=demo", "--set", f"data.root={data}",
                "--set", f"model.overrides={json.dumps(SMALL)}"]
    return {"root": root, "checkpoint": checkpoint, "images": [jpeg, png, rotated], "settings": settings}


def _predict(setup: dict, images: list[Path], out: Path, *extra: str) -> int:
    return main(["predict", "--checkpoint", str(setup["checkpoint"]), "--variant", "r101-detr",
                 *map(str, images), "--out", str(out), *extra, *setup["settings"]])


def test_each_image_gets_a_json_by_the_schema_and_a_png(setup, tmp_path):
    out = tmp_path / "out"
    assert _predict(setup, setup["images"], out, "--top", "4") == 0
    schema = scene_graph_schema()
    sizes = {"wide scene": (150, 60), "rotated": (40, 96)}  # EXIF orientation 6: width and height swap
    for image in setup["images"]:
        document = json.loads((out / f"{image.stem}.json").read_text())
        jsonschema.validate(document, schema)
        width, height = document["width"], document["height"]
        assert (width, height) == sizes.get(image.stem, Image.open(image).size)
        assert document["objects"], "the model always keeps some objects"
        for obj in document["objects"]:
            x1, y1, x2, y2 = obj["box"]
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        triplets = document["triplets"]
        assert 1 <= len(triplets) <= 4
        assert [t["rank"] for t in triplets] == sorted(t["rank"] for t in triplets)
        assert [t["score"] for t in triplets] == sorted((t["score"] for t in triplets), reverse=True)
        assert all(max(t["subject"], t["object"]) < len(document["objects"]) for t in triplets)
        with Image.open(out / f"{image.stem}.png") as picture:
            picture.load()
            # small images are drawn enlarged to a longer side of 480 px, with the triplet list beside them
            assert picture.format == "PNG" and picture.width > 480
            assert picture.height >= round(480 * min(width, height) / max(width, height))


def test_the_threshold_drops_triplets_below_it(setup, tmp_path):
    assert _predict(setup, setup["images"][:1], tmp_path, "--threshold", "1.01") == 0
    document = json.loads((tmp_path / f"{setup['images'][0].stem}.json").read_text())
    assert document["triplets"] == [] and document["objects"]


def test_a_corrupt_or_missing_file_is_one_line_and_the_others_still_run(setup, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    missing = tmp_path / "missing.png"
    out = tmp_path / "out"
    assert _predict(setup, [broken, setup["images"][0], missing, setup["images"][1]], out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "Traceback" not in "".join(err)
    assert err[0].startswith(f"itersg: error: {broken}: cannot decode the image")
    assert err[1] == f"itersg: error: {missing}: no such image file; check the path"
    written = sorted(p.name for p in out.iterdir())
    stems = [setup["images"][0].stem, setup["images"][1].stem]
    assert written == sorted([f"{s}.json" for s in stems] + [f"{s}.png" for s in stems])


def test_two_images_with_one_name_are_refused_before_the_model_loads(setup, tmp_path, capsys):
    twin = tmp_path / setup["images"][0].name
    twin.write_bytes(setup["images"][0].read_bytes())
    assert _predict(setup, [setup["images"][0], twin], tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would both write" in err[0] and not (tmp_path / "out").exists()
