"""`itersg metrics`: a predictions file + a dataset folder -> metrics JSON; bad input -> exit 2, one line.

The ground truth normally comes from the data layer (itersg.data.vg150.load_split_ground_truth); here
``load_ground_truth`` is replaced by an adapter that reads a small JSON file the test writes, so the
verb is tested without building a VG dataset.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from worked_examples import EXPECTED, ZERO_SHOT_1BASED, all_images

import itersg.cli.evaluate as cli_evaluate
from itersg.cli import main
from itersg.evaluation.predictions import PredictionsWriter


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A dataset folder with the dicts JSON, the zero-shot file and a GT JSON read by the adapter."""
    root = tmp_path / "vg"
    root.mkdir()
    names = {str(i + 1): f"predicate-{i}" for i in range(50)}
    (root / "VG-SGG-dicts-with-attri.json").write_text(json.dumps({"idx_to_predicate": names}))
    torch.save(torch.from_numpy(ZERO_SHOT_1BASED), root / "zeroshot_triplet.pytorch")
    gt = {str(pred["image_id"]): {key: value.tolist() for key, value in gt.items()}
          for gt, pred in all_images()}
    (root / "gt_test.json").write_text(json.dumps(gt))

    def load_ground_truth(data_root, split, num_val_images=5000):
        raw = json.loads((data_root / f"gt_{split}.json").read_text())
        return {int(image_id): {key: np.array(value) for key, value in item.items()}
                for image_id, item in raw.items()}

    monkeypatch.setattr(cli_evaluate, "load_ground_truth", load_ground_truth)
    return root


@pytest.fixture
def predictions_file(tmp_path):
    path = tmp_path / "predictions.h5"
    with PredictionsWriter(path, variant="vovnet57-centermask", iteration=300, split="test") as writer:
        for _, pred in all_images():
            writer.add(pred)
    return path


def run(data_dir, predictions, out, *extra):
    return main(["metrics", "--data", str(data_dir), "--predictions", str(predictions), "--out", str(out),
                 *extra])


def test_metrics_verb_writes_the_json(data_dir, predictions_file, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    assert run(data_dir, predictions_file, out) == 0
    document = json.loads(out.read_text())
    assert document["variant"] == "vovnet57-centermask" and document["iteration"] == 300
    assert document["split"] == "test" and document["status"] == "ok" and document["num_images"] == 4
    for name, values in EXPECTED.items():
        assert [document["sgdet"][f"{name}@{k}"] for k in (20, 50, 100)] == pytest.approx(values, abs=1e-6)
    assert document["per_predicate_recall"]["100"]["predicate-32"] == 1.0
    assert "R@20/50/100 = 0.6250/0.8750/0.8750" in capsys.readouterr().out


def test_sgb_convention_and_explicit_zero_shot_file(data_dir, predictions_file, tmp_path):
    zero_shot = tmp_path / "none.pytorch"
    torch.save(torch.zeros((0, 3), dtype=torch.int64), zero_shot)
    out = tmp_path / "metrics.json"
    assert run(data_dir, predictions_file, out, "--iou-convention", "sgb", "--zero-shot", str(zero_shot)) == 0
    sgdet = json.loads(out.read_text())["sgdet"]
    assert sgdet["R@100"] == pytest.approx(0.875) and sgdet["zR@100"] is None


def error_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("itersg: error: ")
    return err


def test_bad_predictions_file_exits_2_with_one_line(data_dir, predictions_file, tmp_path, capsys):
    with h5py.File(predictions_file, "a") as f:
        f["rel_scores"][3, 0] = np.nan
    out = tmp_path / "metrics.json"
    assert run(data_dir, predictions_file, out) == 2
    assert "field 'rel_scores' of image 1 contains NaN" in error_line(capsys)
    assert not out.exists()


def test_user_mistakes_exit_2(data_dir, predictions_file, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    assert run(data_dir, predictions_file, out, "--split", "val") == 2
    assert "pass --split test" in error_line(capsys)
    assert run(data_dir, tmp_path / "missing.h5", out) == 2
    assert "does not exist" in error_line(capsys)
    assert run(data_dir, predictions_file, out, "--zero-shot", str(tmp_path / "nope.pytorch")) == 2
    assert "zero-shot triplet file" in error_line(capsys)
    assert run(tmp_path / "no-data", predictions_file, out) == 2
    assert "no-data: no such dataset folder (--data)" in error_line(capsys)
    (data_dir / "VG-SGG-dicts-with-attri.json").unlink()
    assert run(data_dir, predictions_file, out) == 2
    assert "VG-SGG-dicts-with-attri.json does not exist" in error_line(capsys)


def test_predictions_for_images_outside_the_split_exit_2(data_dir, predictions_file, tmp_path, capsys):
    gt = json.loads((data_dir / "gt_test.json").read_text())
    del gt["4"]
    (data_dir / "gt_test.json").write_text(json.dumps(gt))
    assert run(data_dir, predictions_file, tmp_path / "metrics.json") == 2
    assert "holds image 4 (1 unknown in total) which is not in split 'test'" in error_line(capsys)
