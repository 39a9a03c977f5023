"""`itersg data prepare`: the summary JSON that the report and training read."""

import hashlib
import json

from itersg.cli import main
from itersg.data.vg150 import VG150Index, load_vocabulary, predicate_frequencies


def test_summary_matches_the_loader(synth_vg, tmp_path, capsys):
    out = tmp_path / "prepare" / "summary.json"
    assert main(["data", "prepare", "--root", str(synth_vg), "--out", str(out), "--num-val", "10"]) == 0
    summary = json.loads(out.read_text())
    assert summary["split_sizes"] == {s: len(VG150Index(synth_vg, s, 10)) for s in ("train", "val", "test")}
    assert summary["split_sizes"]["val"] == 10
    assert summary["predicate_frequencies"] == predicate_frequencies(synth_vg, 10).tolist()
    vocabulary = load_vocabulary(synth_vg)
    assert summary["predicate_names"] == list(vocabulary.predicates)
    assert summary["class_names"] == list(vocabulary.classes)
    h5 = synth_vg / "VG-SGG-with-attri.h5"
    assert summary["sha256"]["VG-SGG-with-attri.h5"] == hashlib.sha256(h5.read_bytes()).hexdigest()
    assert sorted(p.name for p in out.parent.iterdir()) == ["summary.json"]  # no temporary file left


def test_missing_root_is_a_one_line_error(tmp_path, capsys):
    assert main(["data", "prepare", "--root", str(tmp_path), "--out", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("itersg: error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.json").exists()


def test_a_validation_split_that_takes_every_training_image_is_an_error(synth_vg, tmp_path, capsys):
    """With the full study's 5000 validation images, the small synthetic set has none left to train on."""
    out = tmp_path / "s.json"
    assert main(["data", "prepare", "--root", str(synth_vg), "--out", str(out), "--num-val", "5000"]) == 2
    err = capsys.readouterr().err
    assert "leaving none to train on; lower data.num_val_images" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
