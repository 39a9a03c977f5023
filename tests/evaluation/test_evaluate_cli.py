"""`itersg evaluate` end to end on a small synthetic dataset with an untrained small model."""

import json
import subprocess
import sys

import pytest
import torch

from itersg.cli import main
from itersg.data.synth import generate
from itersg.data.vg150 import VG150Index
from itersg.evaluation.predictions import PredictionsReader, PredictionsWriter
from itersg.models.registry import build_model

SMALL = {"hidden_dim": 32, "nheads": 2, "enc_layers": 1, "dec_layers": 2, "dim_feedforward": 64, "num_queries": 12,
         "backbone": {"small": True}, "aux_head": {"small": True}}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("eval") / "vg", images=60, seed=5, image_size=64)


def _settings(data_root):
    sets = ["mode=demo", f"data.root={data_root}", "data.num_val_images=5", "evaluate.batch_size=8",
            "evaluate.warmup_batches=1", f"model.overrides={json.dumps(SMALL)}"]
    return [arg for item in sets for arg in ("--set", item)]


@pytest.mark.parametrize("variant", ["r101-detr", "vovnet39-centermask"])
def test_evaluate_writes_predictions_and_metrics(tmp_path, data_root, variant):
    torch.manual_seed(0)
    model = build_model(variant, num_classes=12, num_predicates=7, overrides=SMALL)
    checkpoint = tmp_path / "model.pth"
    torch.save({"model": model.state_dict(), "iteration": 123}, checkpoint)
    out = tmp_path / "eval"
    status = main(["evaluate", "--variant", variant, "--checkpoint", str(checkpoint), "--out", str(out),
                   *_settings(data_root)])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["iteration"] == 123 and metrics["variant"] == variant
    assert metrics["num_images"] == len(VG150Index(data_root, "test", 5))
    assert metrics["params"]["total"] == sum(p.numel() for p in model.parameters())
    timing = metrics["timing"]
    assert timing["s_per_image"] > 0 and timing["batch_size"] == 8 and timing["warmup_batches"] == 1
    assert timing["images_timed"] == metrics["num_images"] - 8
    assert (out / "predictions.h5").is_file()
    assert set(metrics["per_predicate_recall"]["50"]) == {"above", "beside", "bigger than", "same colour as",
                                                          "near", "overlapping", "inside"}


def test_missing_or_partial_checkpoints_are_refused(tmp_path, data_root, capsys):
    args = ["evaluate", "--variant", "r101-detr", "--out", str(tmp_path / "eval"), *_settings(data_root)]
    assert main([*args, "--checkpoint", str(tmp_path / "none.pth")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    model = build_model("r101-detr", num_classes=12, num_predicates=7, overrides=SMALL)
    partial = {k: v for k, v in model.state_dict().items() if not k.startswith("rel_class_embed")}
    torch.save({"model": partial}, tmp_path / "partial.pth")
    assert main([*args, "--checkpoint", str(tmp_path / "partial.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("itersg: error:") and "Traceback" not in err
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_non_finite_weights_are_refused(tmp_path, data_root, capsys):
    model = build_model("r101-detr", num_classes=12, num_predicates=7, overrides=SMALL)
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    torch.save({"model": state}, tmp_path / "nan.pth")
    args = ["evaluate", "--variant", "r101-detr", "--out", str(tmp_path / "eval"), *_settings(data_root)]
    assert main([*args, "--checkpoint", str(tmp_path / "nan.pth")]) == 2
    err = capsys.readouterr().err
    assert "hold NaN or infinite values" in err and "the training diverged" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "eval").exists()


def test_a_broken_dataset_is_one_line_before_any_work(tmp_path, data_root, capsys):
    import shutil

    import h5py

    broken = tmp_path / "vg"
    shutil.copytree(data_root, broken)
    with h5py.File(broken / "VG-SGG-with-attri.h5", "a") as h5:
        boxes = h5["boxes_1024"][()]
        del h5["boxes_1024"]
        h5["boxes_1024"] = boxes[:, :3]  # three columns instead of four
    torch.save({"model": build_model("r101-detr", num_classes=12, num_predicates=7, overrides=SMALL).state_dict()},
               tmp_path / "m.pth")
    args = ["evaluate", "--variant", "r101-detr", "--checkpoint", str(tmp_path / "m.pth"), "--out",
            str(tmp_path / "eval"), *_settings(data_root), "--set", f"data.root={broken}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "boxes_1024" in err and "itersg data verify --root" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "eval").exists()


def test_boxes_outside_the_image_are_one_warning_line(tmp_path, data_root):
    """`itersg metrics` on negative, inverted and huge boxes: one `itersg: warning:` line, no overflow."""
    torch.manual_seed(0)
    model = build_model("r101-detr", num_classes=12, num_predicates=7, overrides=SMALL)
    torch.save({"model": model.state_dict(), "iteration": 1}, tmp_path / "model.pth")
    assert main(["evaluate", "--variant", "r101-detr", "--checkpoint", str(tmp_path / "model.pth"), "--out",
                 str(tmp_path / "eval"), *_settings(data_root)]) == 0
    bad, odd_boxes = tmp_path / "bad.h5", [[-50, -20, 10, 10], [40, 40, 5, 5], [0, 0, 3e38, 3e38]]
    with PredictionsReader(tmp_path / "eval" / "predictions.h5") as reader, PredictionsWriter(
            bad, variant="r101-detr", iteration=1, split="test", num_object_classes=12, num_predicates=7) as writer:
        for record in reader:
            boxes = record["boxes"].copy()
            for row, box in enumerate(odd_boxes[:len(boxes)]):
                boxes[row] = box
            writer.add({**record, "boxes": boxes})
    result = subprocess.run([sys.executable, "-m", "itersg", "metrics", "--data", str(data_root), "--predictions",
                             str(bad), "--out", str(tmp_path / "bad.json"), "--num-val", "5"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"itersg: warning: {bad}: ") and "clipped to the image" in result.stderr


def test_a_speaq_checkpoint_in_the_official_format_evaluates(tmp_path, data_root, capsys):
    from itersg.models.weights.checkpoint_keys import iterativesg_to_reference

    torch.manual_seed(0)
    model = build_model("r101-detr-speaq", num_classes=12, num_predicates=7, overrides=SMALL)
    # detectron2's file: the reference's names, the criterion's two buffers, 2 x 12 relation queries
    state = {**iterativesg_to_reference(model.state_dict()), "criterion.empty_weight_obj": torch.ones(13),
             "criterion.empty_rel_weight": torch.ones(8)}
    assert state["detr.relation_query_embed.weight"].shape == (24, 32)
    torch.save({"model": state, "iteration": 149999}, tmp_path / "model_final.pth")
    args = ["evaluate", "--variant", "r101-detr-speaq", *_settings(data_root)]
    assert main([*args, "--checkpoint", str(tmp_path / "model_final.pth"), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["variant"] == "r101-detr-speaq"
    assert metrics["params"]["total"] == sum(p.numel() for p in model.parameters())
    # an IterativeSG checkpoint lacks SpeaQ's extra relation queries: refused, not evaluated half-initialised
    plain = build_model("r101-detr", num_classes=12, num_predicates=7, overrides=SMALL)
    torch.save({"model": plain.state_dict()}, tmp_path / "isg.pth")
    capsys.readouterr()
    assert main([*args, "--checkpoint", str(tmp_path / "isg.pth"), "--out", str(tmp_path / "isg")]) == 2
    assert "relation_query_embed" in capsys.readouterr().err
