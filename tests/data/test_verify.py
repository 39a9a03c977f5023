"""`itersg data verify` on good data and on each kind of broken file."""

import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from itersg.cli import main
from itersg.data.vg150 import CORRUPTED_IMAGE_IDS
from vg150_corruptions import CORRUPTIONS, keep_predicate_1_out_of_training


@pytest.fixture
def vg_copy(synth_vg, tmp_path):
    return shutil.copytree(synth_vg, tmp_path / "vg")


def _verify(root, capsys):
    status = main(["data", "verify", "--root", str(root)])
    out = capsys.readouterr()
    return status, out.out, out.err


def _rewrite(path, name, data):
    with h5py.File(path, "a") as h5:
        del h5[name]
        h5[name] = data


def test_good_data_passes(synth_vg, capsys):
    status, out, err = _verify(synth_vg, capsys)
    assert status == 0 and "OK" in out and err == ""


def _truncate(root):
    path = root / "VG-SGG-with-attri.h5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _drop_dataset(root):
    with h5py.File(root / "VG-SGG-with-attri.h5", "a") as h5:
        del h5["predicates"]


def _float_labels(root):
    path = root / "VG-SGG-with-attri.h5"
    with h5py.File(path) as h5:
        labels = h5["labels"][()]
    _rewrite(path, "labels", labels.astype(np.float32))


def _index_out_of_range(root):
    path = root / "VG-SGG-with-attri.h5"
    with h5py.File(path) as h5:
        last = h5["img_to_last_box"][()]
    last[3] = 10**6
    _rewrite(path, "img_to_last_box", last)


def _relation_into_other_image(root):
    path = root / "VG-SGG-with-attri.h5"
    with h5py.File(path) as h5:
        relationships = h5["relationships"][()]
        first_rel = h5["img_to_first_rel"][()]
    row = int(first_rel[first_rel >= 0][5])
    relationships[row] = [0, 0] if relationships[row, 0] > 5 else [len(relationships), 0]
    _rewrite(path, "relationships", relationships)


def _missing_image(root):
    next(iter(sorted((root / "VG_100K").iterdir()))).unlink()


def _undecodable_image(root):
    next(iter(sorted((root / "VG_100K").iterdir()))).write_bytes(b"not a jpeg")


def _image_data_short(root):
    path = root / "image_data.json"
    path.write_text(json.dumps(json.loads(path.read_text())[:-3]))


def _label_out_of_range(root):
    path = root / "VG-SGG-with-attri.h5"
    with h5py.File(path) as h5:
        labels = h5["labels"][()]
    labels[0] = 999
    _rewrite(path, "labels", labels)


def _bad_image_size(root):
    path = root / "image_data.json"
    records = json.loads(path.read_text())
    records[0]["width"] = 0
    path.write_text(json.dumps(records))


def _zero_shot_wrong_shape(root):
    torch.save(torch.ones(4, 2, dtype=torch.int64), root / "zeroshot_triplet.pytorch")


def _half_open_range(root):
    path = root / "VG-SGG-with-attri.h5"
    with h5py.File(path) as h5:
        first = h5["img_to_first_rel"][()]
    first[np.flatnonzero(first >= 0)[0]] = -1  # -1 for "no relation" but img_to_last_rel still set
    _rewrite(path, "img_to_first_rel", first)


@pytest.mark.parametrize(("corrupt", "expected"), [
    (_bad_image_size, "width/height 0/"),
    (_zero_shot_wrong_shape, "zeroshot_triplet.pytorch: zero-shot triplets must be a tensor of shape (Z, 3)"),
    (_half_open_range, "img_to_first_rel/img_to_last_rel = -1/"),
    (_truncate, "VG-SGG-with-attri.h5: unreadable or truncated h5"),
    (_drop_dataset, "dataset 'predicates' missing"),
    (_float_labels, "dataset 'labels' has dtype float32"),
    (_index_out_of_range, "img_to_first_box/img_to_last_box"),
    (_relation_into_other_image, "points outside the boxes of image row"),
    (_missing_image, "image missing"),
    (_undecodable_image, "image cannot be decoded"),
    (_image_data_short, "image_data.json: "),
    (_label_out_of_range, "'labels' range"),
])
def test_each_problem_gives_one_clear_line(vg_copy, capsys, corrupt, expected):
    corrupt(vg_copy)
    status, out, err = _verify(vg_copy, capsys)
    assert status == 1 and out == ""
    lines = err.strip().splitlines()
    assert any(expected in line for line in lines), err
    assert "Traceback" not in err
    assert lines[-1].startswith("itersg data verify:")


def test_missing_folder_is_reported(tmp_path, capsys):
    status, _, err = _verify(tmp_path, capsys)
    assert status == 1 and "VG-SGG-with-attri.h5: missing" in err


def test_problems_of_one_kind_are_capped(vg_copy, capsys):
    path = vg_copy / "VG-SGG-with-attri.h5"
    with h5py.File(path) as h5:
        relationships = h5["relationships"][()]
    relationships[:] = len(relationships) * 10  # every relation points outside its image
    _rewrite(path, "relationships", relationships)
    status, _, err = _verify(vg_copy, capsys)
    lines = err.strip().splitlines()
    assert status == 1 and len(lines) == 7  # 5 shown, "... and N more", the summary
    assert lines[5].startswith("... and ") and lines[5].endswith("more relationships problems")


def test_decode_checks_the_image_size_that_the_boxes_are_scaled_by(vg_copy, capsys):
    """image_data.json sizes 3x the JPEG's: only --decode (which opens every image fully) can see it."""
    path = vg_copy / "image_data.json"
    records = json.loads(path.read_text())
    first = records[0]
    first["width"], first["height"] = 3 * first["width"], 3 * first["height"]
    path.write_text(json.dumps(records))
    assert main(["data", "verify", "--root", str(vg_copy)]) == 0
    capsys.readouterr()
    assert main(["data", "verify", "--root", str(vg_copy), "--decode"]) == 1
    err = capsys.readouterr().err
    real = f"{first['width'] // 3}x{first['height'] // 3}"
    assert f"{first['image_id']}.jpg: the JPEG is {real} but image_data.json says " in err, err


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_corruption_of_the_h5_is_listed(vg_copy, capsys, name):
    """The table that every command reading the h5 refuses (tests/bad_inputs_datasets.py)."""
    corrupt, field = CORRUPTIONS[name]
    corrupt(vg_copy)
    status, out, err = _verify(vg_copy, capsys)
    assert status == 1 and out == "" and "Traceback" not in err
    h5 = f"{vg_copy / 'VG-SGG-with-attri.h5'}: "
    assert any(line.startswith(h5) and field in line for line in err.splitlines()), err


def test_a_predicate_without_training_relations_is_a_warning(vg_copy, capsys):
    keep_predicate_1_out_of_training(vg_copy)
    with pytest.warns(UserWarning, match=r"1 of 7 predicates have no relation in the training images \(split 0\): "
                                         r"'above'; training runs, as the reference's does, but cannot learn them"):
        status, out, _ = _verify(vg_copy, capsys)
    assert status == 0 and "OK" in out


def test_a_box_wholly_outside_its_image_is_tolerated_and_counted(vg_copy, capsys):
    """As in the published file: its encoder clamps boxes to 1024 x 1024, not to the image."""
    records = [r for r in json.loads((vg_copy / "image_data.json").read_text())
               if r["image_id"] not in CORRUPTED_IMAGE_IDS]
    path = vg_copy / "VG-SGG-with-attri.h5"
    with h5py.File(path) as h5:
        first_box, boxes = h5["img_to_first_box"][()], h5["boxes_1024"][()]
    row = next(i for i, r in enumerate(records) if r["width"] > r["height"] and first_box[i] >= 0)
    bottom = records[row]["height"] / records[row]["width"] * 1024
    boxes[first_box[row]] = [100, int(bottom) + 31, 50, 40]  # top edge 11 px below the image
    _rewrite(path, "boxes_1024", boxes)
    status, out, err = _verify(vg_copy, capsys)
    assert status == 0 and err == "" and out.strip().endswith(
        "; 1 box(es) lie wholly outside their image (dropped when read, as the reference does)")
