"""The VG150 reader against hand-computed answers and the verified shared files."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from itersg.data.vg150 import (
    VG150Index,
    load_split_ground_truth,
    load_vocabulary,
    load_zero_shot,
    predicate_frequencies,
    xyxy_from_boxes_1024,
)
from itersg.errors import UserError

SHARED_VG = Path(__file__).resolve().parents[3] / "shared" / "data" / "vg"


def test_box_conversion_truncates_like_the_reference():
    boxes = np.array([[101, 201, 51, 41]], dtype=np.int32)
    # x1 = 101 - 25.5 = 75.5 -> 75 in int32; x2 = 75 + 51 = 126
    assert xyxy_from_boxes_1024(boxes).tolist() == [[75, 180, 126, 221]]


def test_splits_follow_the_reference_rules(tiny_vg):
    # split-0 rows with boxes and relations: rows 0, 1 (row 2 has no relation, row 4 no boxes)
    assert VG150Index(tiny_vg, "val", num_val_images=1).image_ids.tolist() == [1]
    assert VG150Index(tiny_vg, "train", num_val_images=1).image_ids.tolist() == [2]
    assert VG150Index(tiny_vg, "test", num_val_images=1).image_ids.tolist() == [4]
    kept = VG150Index(tiny_vg, "train", num_val_images=0, filter_empty_rels=False)
    assert kept.image_ids.tolist() == [1, 2, 3]


def test_annotations_are_zero_based_in_original_pixels(tiny_vg):
    index = VG150Index(tiny_vg, "val", num_val_images=1)
    annotation = index.annotations(0)
    scale = 800 / 1024
    np.testing.assert_allclose(annotation["boxes"][0], np.array([75, 180, 126, 221]) * scale, rtol=1e-6)
    assert annotation["labels"].tolist() == [0, 149]
    # not the training split: duplicates kept
    assert annotation["relations"].tolist() == [[0, 1, 0], [0, 1, 0], [0, 1, 49]]


def test_duplicates_are_removed_in_training_only(tiny_vg):
    train = VG150Index(tiny_vg, "train", num_val_images=0)
    assert train.annotations(0)["relations"].tolist() == [[0, 1, 0], [0, 1, 49]]
    test = VG150Index(tiny_vg, "test", num_val_images=0)
    assert test.annotations(0)["relations"].tolist() == [[0, 1, 4], [0, 1, 4]]


def test_predicate_frequencies_count_training_duplicates(tiny_vg):
    counts = predicate_frequencies(tiny_vg, num_val_images=0)
    assert counts.shape == (50,)
    assert counts[0] == 2 and counts[49] == 1 and counts[19] == 1 and counts.sum() == 4


def test_ground_truth_is_clipped_and_keeps_duplicates(tiny_vg):
    ground_truth = load_split_ground_truth(tiny_vg, "test", num_val_images=0)
    image = ground_truth[4]
    assert image["boxes"].max() <= 1024 and image["boxes"].min() >= 0
    assert image["relations"].tolist() == [[0, 1, 4], [0, 1, 4]]
    assert (image["width"], image["height"]) == (1024, 768)


def test_shared_dicts_and_zero_shot_files():
    assert hashlib.sha256((SHARED_VG / "zeroshot_triplet.pytorch").read_bytes()).hexdigest() == (
        "3ab7a6a815da643902115adeb96f188bfe963938b31d74fa7719c764b98fb88a")
    vocabulary = load_vocabulary(SHARED_VG)
    assert len(vocabulary.classes) == 150 and len(vocabulary.predicates) == 50
    assert vocabulary.predicates[0] == "above" and vocabulary.classes[0] == "airplane"
    triplets = load_zero_shot(SHARED_VG)
    assert triplets.shape == (5971, 3) and triplets.min() == 1
    assert triplets[:, 2].max() == 50


def test_mismatched_image_data_is_a_clear_error(tiny_vg):
    (tiny_vg / "image_data.json").write_text("[]")
    with pytest.raises(UserError, match=r"image_data\.json: 0 images"):
        VG150Index(tiny_vg, "train")


def test_missing_h5_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match=r"VG-SGG-with-attri\.h5: file not found"):
        VG150Index(tmp_path, "train")
