"""`itersg data verify` on good data and on each kind of broken file."""

import json
import shutil

import h5py
import numpy as np
import pytest

from itersg.cli import main


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


@pytest.mark.parametrize(("corrupt", "expected"), [
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
