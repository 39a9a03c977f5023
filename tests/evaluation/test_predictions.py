"""The predictions file: round trip, atomic writing, and a clear UserError for every kind of bad file."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from worked_examples import all_images

from itersg.errors import UserError
from itersg.evaluation.predictions import FIELD_DTYPES, PredictionsReader, PredictionsWriter


def predictions():
    return [pred for _, pred in all_images()]


def write(path, records=None, **attrs):
    options = {"variant": "r101-detr", "iteration": 1234, "split": "test", **attrs}
    with PredictionsWriter(path, buffer_images=3, **options) as writer:
        for record in predictions() if records is None else records:
            writer.add(record)
    return path


def test_round_trip(tmp_path):
    path = write(tmp_path / "preds.h5")
    with PredictionsReader(path) as reader:
        assert (reader.variant, reader.iteration, reader.split) == ("r101-detr", 1234, "test")
        assert (reader.num_object_classes, reader.num_predicates) == (150, 50)
        assert reader.image_ids.tolist() == [1, 2, 3, 4]
        read = list(reader.iter_predictions(block_images=3))  # blocks across image boundaries
    assert len(read) == 4
    for original, back in zip(predictions(), read):
        assert back["image_id"] == original["image_id"]
        for name, dtype in FIELD_DTYPES.items():
            assert back[name].dtype == dtype
            np.testing.assert_array_equal(back[name], original[name])


def test_writer_accepts_tensors_and_empty_images(tmp_path):
    record = {name: torch.as_tensor(value) for name, value in predictions()[0].items() if name != "image_id"}
    empty = {"image_id": 8, "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
             "scores": np.zeros(0, np.float32), "rel_pairs": np.zeros((0, 2), np.int64),
             "rel_scores": np.zeros((0, 51), np.float32), "triplet_scores": np.zeros(0, np.float32)}
    path = write(tmp_path / "preds.h5", [{**record, "image_id": torch.tensor(7)}, empty])
    with PredictionsReader(path) as reader:
        first, second = list(reader)
    np.testing.assert_array_equal(first["rel_scores"], predictions()[0]["rel_scores"])
    assert second["image_id"] == 8 and second["boxes"].shape == (0, 4)


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "preds.h5"
    with pytest.raises(RuntimeError), PredictionsWriter(path, variant="v", iteration=1, split="test") as w:
        w.add(predictions()[0])
        raise RuntimeError("inference crashed")
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_records(tmp_path):
    good = predictions()[0]
    with PredictionsWriter(tmp_path / "p.h5", variant="v", iteration=1, split="test") as writer:
        with pytest.raises(UserError, match="image 1: field 'rel_scores' contains NaN"):
            bad = good["rel_scores"].copy()
            bad[2, 3] = np.nan
            writer.add({**good, "rel_scores": bad})
        with pytest.raises(UserError, match="field 'labels' has dtype float32"):
            writer.add({**good, "labels": good["labels"].astype(np.float32)})
        writer.add(good)
        with pytest.raises(UserError, match="image 1 was added twice"):
            writer.add(good)


def rewrite(path, name, data):
    with h5py.File(path, "a") as f:
        del f[name]
        if data is not None:
            f.create_dataset(name, data=data)


def corrupt(path, field, value, row=0):
    with h5py.File(path, "a") as f:
        data = f[field][:]
        data[row] = value
        f[field][...] = data


@pytest.mark.parametrize(("damage", "message"), [
    (lambda p: rewrite(p, "rel_scores", None), r"field 'rel_scores' is missing"),
    (lambda p: rewrite(p, "boxes", np.zeros((7, 3), np.float32)), r"field 'boxes' has shape \(7, 3\)"),
    (lambda p: rewrite(p, "rel_scores", np.zeros((36, 40), np.float32)),
     r"field 'rel_scores' has shape \(36, 40\), expected \(36, 51\)"),
    (lambda p: rewrite(p, "scores", np.zeros(16, np.float64)), r"field 'scores' has dtype float64"),
    (lambda p: rewrite(p, "image_ids", np.array([1, 2, 2, 4])), r"lists image 2 more than once"),
    (lambda p: rewrite(p, "relation_offsets", np.array([0, 4, 2, 32, 36])), r"'relation_offsets' is not"),
    (lambda p: corrupt(p, "rel_scores", np.nan, row=5), r"field 'rel_scores' of image 2 contains NaN"),
    (lambda p: corrupt(p, "triplet_scores", np.inf, row=33), r"'triplet_scores' of image 4 contains NaN"),
    (lambda p: corrupt(p, "boxes", np.nan, row=9), r"field 'boxes' of image 3 contains NaN"),
    (lambda p: corrupt(p, "labels", 150, row=4), r"field 'labels' of image 2 has labels outside 0..149"),
    (lambda p: corrupt(p, "rel_pairs", [0, 3], row=10), r"'rel_pairs' of image 2 has object indices outside"),
    (lambda p: corrupt(p, "rel_pairs", [-1, 0], row=0), r"'rel_pairs' of image 1 has object indices outside"),
])
def test_bad_files_give_one_clear_line(tmp_path, damage, message):
    path = write(tmp_path / "preds.h5")
    damage(path)
    with pytest.raises(UserError, match=message) as info, PredictionsReader(path) as reader:
        list(reader)
    text = str(info.value)
    assert "\n" not in text and str(path) in text and "itersg evaluate" in text


def test_unknown_image_ids(tmp_path):
    with PredictionsReader(write(tmp_path / "preds.h5")) as reader:
        reader.check_image_ids([1, 2, 3, 4, 5], "test")
        with pytest.raises(UserError, match=r"holds image 4 \(1 unknown in total\) which is not in split"):
            reader.check_image_ids([1, 2, 3], "val")


def test_not_a_predictions_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        PredictionsReader(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(UserError, match="not a readable HDF5"):
        PredictionsReader(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("boxes", data=np.zeros((1, 4)))
    with pytest.raises(UserError, match="attribute 'format' is None"):
        PredictionsReader(tmp_path / "other.h5")
    path = write(tmp_path / "preds.h5")
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(UserError, match="format_version 99 is not supported"):
        PredictionsReader(path)


def test_a_dataset_with_fewer_predicates(tmp_path):
    record = dict(predictions()[0], rel_scores=np.full((4, 6), 1 / 6, np.float32))
    path = write(tmp_path / "preds.h5", [record], num_predicates=5)
    with PredictionsReader(path) as reader:
        assert reader.num_predicates == 5
        assert next(iter(reader))["rel_scores"].shape == (4, 6)


def test_files_written_with_gzip_read_the_same(tmp_path):
    """The writer's codecs (LZF; none for the predicate scores) are a storage choice: a file whose
    datasets all use gzip reads identically."""
    path = write(tmp_path / "preds.h5")
    with h5py.File(path, "a") as file:
        assert file["rel_scores"].compression is None and file["boxes"].compression == "lzf"
        for name in FIELD_DTYPES:
            data = file[name][...]
            del file[name]
            file.create_dataset(name, data=data, maxshape=(None, *data.shape[1:]), chunks=True,
                                compression="gzip", compression_opts=1, shuffle=True)
    with PredictionsReader(path) as reader:
        read = list(reader)
    for original, back in zip(predictions(), read, strict=True):
        for name in FIELD_DTYPES:
            np.testing.assert_array_equal(back[name], original[name])
