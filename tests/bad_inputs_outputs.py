"""Outputs that would destroy data: an input of the command, a file or a non-empty folder it did not write.

Each refusal is one error line naming the path, and nothing changes. A rerun onto the command's own
earlier output succeeds without a flag; ``--force`` writes over a file (or into a folder) of the user's,
but never over an input.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import h5py
import torch
import yaml
from PIL import Image

from bad_inputs_cases import Case
from cli_inputs import TINY, demo_sets
from itersg.files import output_mark

MODEL = json.dumps(TINY)
FORCE = "pass --force"
NOT_OVER_INPUTS = "--force never writes over an input"


def _main(argv: list[str]) -> None:
    from itersg.cli import main

    assert main(argv) == 0, argv


# --- command lines -----------------------------------------------------------------------------------

def _path(f, out) -> str:
    """``out``: a path relative to the demo's folder, or a function of the files giving one."""
    return str(out(f) if callable(out) else f.root / out)


def _metrics(out, *extra: str):
    return lambda f: ["metrics", "--data", str(f.data), "--predictions", str(f.predictions), "--out",
                      _path(f, out), "--num-val", "6", *extra]


def _replicate(out, *extra: str):
    return lambda f: ["replicate-decoder", "--detr", str(f.detr), "--out", _path(f, out), "--num-predicates",
                      str(f.num_predicates), "--overrides", MODEL, *extra]


def _image(f) -> str:
    return str(f.data / "VG_100K" / "1.jpg")


def _predict(out: str, *extra: str, image=_image):
    return lambda f: ["predict", image(f), "--checkpoint", str(f.checkpoint), "--variant", "r101-detr", "--out",
                      str(f.root / out), *demo_sets(f.data), *extra]


def _prepare(out: str, *extra: str):
    return lambda f: ["data", "prepare", "--root", str(f.data), "--out", str(f.root / out), "--num-val", "6", *extra]


def _report(out, *extra: str, metrics=lambda f: f.metrics):
    return lambda f: ["report", "--metrics", str(metrics(f)), "--out", _path(f, out), *extra]


def _synth(out: str, *extra: str, images: int = 10):
    return lambda f: ["data", "synth", "--out", str(f.root / out), "--images", str(images), "--image-size", "32",
                      *extra]


def _train(out: str, *extra: str, verb: str = "train"):
    variant = ["--variant", "r101-detr"] if verb == "train" else []
    return lambda f: [verb, *variant, "--out", str(f.root / out), *demo_sets(f.data), *extra]


def _evaluate(out: str, *extra: str):
    return lambda f: ["evaluate", "--variant", "r101-detr", "--checkpoint", str(f.checkpoint), "--out",
                      str(f.root / out), *demo_sets(f.data), *extra]


def _docs(root: str | None, *extra: str):
    return lambda f: ["docs", *(["--root", str(f.root / root)] if root is not None else []), *extra]


# --- setups ------------------------------------------------------------------------------------------

def _write(name: str, text: str):
    def setup(f) -> None:
        (f.root / name).parent.mkdir(parents=True, exist_ok=True)
        (f.root / name).write_text(text)
    return setup


def _link(name: str, target: str, hard: bool = False):
    def setup(f) -> None:
        if hard:
            (f.root / name).hardlink_to(getattr(f, target))
        else:
            (f.root / name).symlink_to(getattr(f, target))
    return setup


def _png_image_in(folder: str):
    def setup(f) -> None:
        (f.root / folder).mkdir()
        Image.open(_image(f)).save(f.root / folder / "photo.png")
    return setup


def _run_first(argv):
    return lambda f: _main(argv(f))


def _trained_then_final_deleted(f) -> None:
    """A finished run whose model_final.pth is gone, as Snakemake deletes a rule's outputs before rerunning it."""
    _main(_train("run")(f))
    (f.root / "run" / "model_final.pth").unlink()


def _strip_the_synthetic_mark(f) -> None:
    """The demo dataset as a real VG150 folder would be: the same files without itersg's mark."""
    with h5py.File(f.data / "VG-SGG-with-attri.h5", "r+") as h5:
        del h5.attrs["format"]


def _project(f, cli_doc: str | None = None) -> None:
    """A checkout of the project as far as ``itersg docs`` reads it (and a hand-written docs/cli.md)."""
    (f.root / "proj" / "docs").mkdir(parents=True)
    (f.root / "proj" / "pyproject.toml").write_text('[project]\nname = "itersg"\n')
    if cli_doc is not None:
        (f.root / "proj" / "docs" / "cli.md").write_text(cli_doc)


def _fetch_over(text: str):
    """A manifest of one file (nowhere to download it from) and ``text`` where it goes."""
    def setup(f) -> None:
        body = b"the expected weights\n"
        entry = {"name": "blob", "kind": "file", "urls": ["http://127.0.0.1:9/blob.pth"], "dest": "weights/blob.pth",
                 "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        (f.root / "manifest.yaml").write_text(yaml.safe_dump({"version": 1, "entries": [entry], "folders": []}))
        _write("dest/weights/blob.pth", text)(f)
    return setup


def _fetch(f) -> list[str]:
    return ["fetch", "blob", "--dest", str(f.root / "dest"), "--manifest", str(f.root / "manifest.yaml"),
            "--attempts", "1"]


# --- checks ------------------------------------------------------------------------------------------

def _marked(name: str, mark: str):
    def check(f) -> None:
        assert output_mark(f.root / name) == mark, (name, output_mark(f.root / name))
    return check


def _synthetic(folder: str, images: int, keeps: str | None = None):
    def check(f) -> None:
        assert output_mark(f.root / folder / "VG-SGG-with-attri.h5") == "itersg-synthetic-vg150"
        assert len(json.loads((f.root / folder / "image_data.json").read_text())) >= images
        if keeps is not None:
            assert (f.root / folder / keeps).read_text() == "mine\n"
    return check


def _trained(folder: str):
    def check(f) -> None:
        final = torch.load(f.root / folder / "model_final.pth", weights_only=True)
        assert final["iteration"] == 2 and final["stage"] == "train"
    return check


def _predicted(folder: str):
    def check(f) -> None:
        assert json.loads((f.root / folder / "1.json").read_text())["format"] == "itersg-scene-graph"
        assert output_mark(f.root / folder / "1.png") == "itersg predict"
    return check


def _replicated(name: str):
    def check(f) -> None:
        state = torch.load(f.root / name, weights_only=True)
        assert state["format"] == "itersg-replicated-decoder" and state["replicated_from"] == str(f.detr)
    return check


def _docs_written(f) -> None:
    for name in ("cli.md", "configuration.md"):
        assert output_mark(f.root / "proj" / "docs" / name) == "itersg docs"


def _trained_beside_notes(f) -> None:
    assert (f.root / "notes.txt").read_text() == "mine\n"
    _trained("")(f)


# --- the cases ---------------------------------------------------------------------------------------

CASES = {
    # over an input: never, not even with --force
    "metrics-out-is-the-predictions": Case(
        _metrics(lambda f: f.predictions),
        lambda f: (f"{f.predictions}: is the --predictions input of this command", "choose another --out",
                   NOT_OVER_INPUTS)),
    "metrics-out-is-a-symlink-to-the-predictions": Case(
        _metrics("m.json"), lambda f: (f"{f.root / 'm.json'}: would replace {f.predictions}, the --predictions input",),
        setup=_link("m.json", "predictions")),
    "metrics-out-is-a-hard-link-to-the-predictions-even-with-force": Case(
        _metrics("m.json", "--force"), ("m.json: would replace", "the --predictions input", NOT_OVER_INPUTS),
        setup=_link("m.json", "predictions", hard=True)),
    "replicate-decoder-out-is-the-detr": Case(
        _replicate(lambda f: f.detr),
        lambda f: f"{f.detr}: is the --detr input of this command; choose another --out"),
    "predict-out-is-the-folder-of-the-images": Case(
        _predict("vg/VG_100K"),
        lambda f: (f"{f.data / 'VG_100K'}: is a non-empty folder holding {_image(f)}, the IMAGE input", FORCE)),
    "predict-force-would-still-replace-a-png-image": Case(
        _predict("pics", "--force", image=lambda f: str(f.root / "pics" / "photo.png")),
        lambda f: (f"{f.root / 'pics' / 'photo.png'}: is the IMAGE input", NOT_OVER_INPUTS),
        setup=_png_image_in("pics")),
    "prepare-out-is-the-datasets-h5": Case(
        _prepare("vg/VG-SGG-with-attri.h5"), "VG-SGG-with-attri.h5: is the --root input of this command"),
    "report-out-is-its-metrics-file": Case(
        _report(lambda f: f.metrics),
        lambda f: f"{f.metrics}: is the --metrics input of this command"),
    "report-out-is-a-predictions-file-of-the-gallery": Case(
        _report(lambda f: f.predictions, metrics=lambda f: f.root / "eval" / "*.json"),
        lambda f: f"{f.predictions}: is the gallery input of this command"),
    "train-out-is-the-dataset": Case(_train("vg"), lambda f: f"{f.data}: is the data.root input of this command"),
    "pretrain-detr-out-is-the-image-folder": Case(
        _train("vg/VG_100K", verb="pretrain-detr"), "VG_100K: is the data.root input of this command"),
    "train-would-move-its-init-aside": Case(
        lambda f: [*_train("run")(f), "--init", str(f.root / "run" / "model_final.pth")],
        "model_final.pth: is the --init input of this command",
        setup=lambda f: (f.root / "run").mkdir() or shutil.copy(f.checkpoint, f.root / "run" / "model_final.pth")),
    # over a file the command did not write
    "metrics-over-a-users-json": Case(
        _metrics("notes.json"), ("notes.json: exists and is not a metrics JSON written by itersg", FORCE),
        setup=_write("notes.json", '{"mine": true}\n')),
    "report-over-another-metrics-file": Case(
        _report("other.json"), ("other.json: exists and is not a report written by `itersg report`", FORCE),
        setup=lambda f: shutil.copy(f.metrics, f.root / "other.json")),
    "replicate-decoder-over-a-training-checkpoint": Case(
        _replicate("model.pth"), "model.pth: exists and is not a checkpoint written by `itersg replicate-decoder`"),
    "evaluate-over-a-users-metrics-json": Case(
        _evaluate("ev"), "ev/metrics.json: exists and is not a metrics JSON written by itersg",
        setup=_write("ev/metrics.json", "{}\n")),
    "prepare-over-a-users-file": Case(_prepare("notes.txt"), "notes.txt: exists and is not a data summary",
                                      setup=_write("notes.txt", "mine\n")),
    "docs-over-a-hand-written-doc": Case(
        _docs("proj"),
        ("proj/docs/cli.md: exists and is not a doc generated by `itersg docs`", "choose another --root"),
        setup=lambda f: _project(f, "# my notes\n")),
    "fetch-over-a-users-file": Case(
        _fetch, ("weights/blob.pth: exists and is not the expected file of blob", FORCE),
        setup=_fetch_over("my own weights\n")),
    # into a non-empty folder the command does not own
    "synth-into-a-users-folder": Case(
        _synth(""), ("is a non-empty folder that is not a synthetic dataset written by `itersg data synth`", FORCE)),
    "synth-over-a-real-dataset": Case(
        _synth("vg"), "vg: is a non-empty folder that is not a synthetic dataset", setup=_strip_the_synthetic_mark),
    "train-into-a-users-folder": Case(
        _train(""), lambda f: (f"{f.root}: is a non-empty folder holding {f.data}, the data.root input of this "
                               "command, and not a training run folder", FORCE)),
    "bench-index-onto-a-dataset": Case(
        lambda f: ["bench", "index", "--root", str(f.data)],
        ("vg: is a non-empty folder that is not a folder written by `itersg bench index`", "choose another --root")),
    "docs-outside-the-project": Case(_docs(None), "not a checkout of the itersg project"),
    "docs-root-is-a-dataset": Case(_docs("vg"), "vg: not a checkout of the itersg project"),
    "pipeline-dvc-outside-the-project": Case(
        lambda f: ["pipeline", "dvc", "--root", str(f.root)], "not a checkout of the itersg project"),
    # a rerun onto the command's own earlier output needs no flag
    "metrics-rerun-onto-evaluates-metrics": Case(
        _metrics(lambda f: f.metrics), "",
        changes=("eval/metrics.json",), check=_marked("eval/metrics.json", "itersg-metrics")),
    "evaluate-rerun-onto-its-own-folder": Case(
        _evaluate("eval"), "", changes=("eval/predictions.h5", "eval/metrics.json"),
        check=_marked("eval/predictions.h5", "itersg-predictions")),
    "replicate-decoder-rerun": Case(
        _replicate("init.pth"), "", setup=_run_first(_replicate("init.pth")), changes=("init.pth",),
        check=_replicated("init.pth")),
    "prepare-rerun": Case(_prepare("summary.json"), "", setup=_run_first(_prepare("summary.json")),
                          changes=("summary.json",), check=_marked("summary.json", "itersg-data-summary")),
    "report-rerun": Case(_report("report.html"), "", setup=_run_first(_report("report.html")),
                         changes=("report.html",), check=_marked("report.html", "itersg report")),
    "predict-rerun-into-its-own-folder": Case(
        _predict("pred"), "", setup=_run_first(_predict("pred")), changes=("pred/1.json", "pred/1.png"),
        check=_predicted("pred")),
    "synth-rerun-with-more-images": Case(
        _synth("synth", images=12), "", setup=_run_first(_synth("synth")),
        changes=tuple(f"synth/{name}" for name in ("VG-SGG-with-attri.h5", "VG-SGG-dicts-with-attri.json",
                                                    "image_data.json", "zeroshot_triplet.pytorch")),
        check=_synthetic("synth", 12)),
    "synth-after-its-files-were-deleted": Case(
        _synth("synth"), "", setup=lambda f: (f.root / "synth").mkdir(), check=_synthetic("synth", 10)),
    "train-rerun-resumes-in-its-own-run-folder": Case(
        _train("run"), "", setup=_trained_then_final_deleted, changes=("run/log.jsonl", "run/dvclive/metrics.json"),
        check=_trained("run")),
    "docs-rerun-in-a-project": Case(
        _docs("proj"), "", setup=lambda f: _project(f) or _main(_docs("proj")(f)),
        changes=("proj/docs/cli.md", "proj/docs/configuration.md"), check=_docs_written),
    # --force writes over a file, or into a folder, of the user's
    "metrics-force-over-a-users-json": Case(
        _metrics("notes.json", "--force"), "", setup=_write("notes.json", '{"mine": true}\n'),
        changes=("notes.json",), check=_marked("notes.json", "itersg-metrics")),
    "replicate-decoder-force-over-a-training-checkpoint": Case(
        _replicate("model.pth", "--force"), "", changes=("model.pth",), check=_replicated("model.pth")),
    "report-force-over-a-users-page": Case(
        _report("notes.html", "--force"), "", setup=_write("notes.html", "<p>mine</p>\n"), changes=("notes.html",),
        check=_marked("notes.html", "itersg report")),
    "predict-force-into-the-folder-of-the-images": Case(
        _predict("vg/VG_100K", "--force"), "", check=_predicted("vg/VG_100K")),
    "synth-force-into-a-users-folder": Case(
        _synth("mine", "--force"), "", setup=_write("mine/notes.txt", "mine\n"),
        check=_synthetic("mine", 10, keeps="notes.txt")),
    "train-force-into-a-users-folder": Case(
        _train("", "--force"), "", setup=_write("notes.txt", "mine\n"), check=_trained_beside_notes),
    "docs-force-over-a-hand-written-doc": Case(
        _docs("proj", "--force"), "", setup=lambda f: _project(f, "# my notes\n"), changes=("proj/docs/cli.md",),
        check=_docs_written),
}

