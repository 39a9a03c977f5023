"""The VG150 reader against hand-computed answers and the verified shared files."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from itersg.data.vg150 import (
    VG150Index,
    load_split_ground_truth,
    load_vocabulary,
    load_zero_shot,
    predicate_frequencies,
    sample_predicate_per_pair,
    xyxy_from_boxes_1024,
    zero_based,
)
from itersg.errors import UserError

SHARED_VG = Path(__file__).resolve().parents[3] / "shared" / "data" / "vg"


def test_box_conversion_truncates_like_the_reference():
    boxes = np.array([[101, 201, 51, 41], [10, 3, 25, 9]], dtype=np.int32)
    # x1 = 101 - 25.5 = 75.5 -> 75 in int32; x2 = 75 + 51 = 126
    # x1 = 10 - 12.5 = -2.5 -> -2 (toward zero, not floor); y1 = 3 - 4.5 = -1.5 -> -1
    assert xyxy_from_boxes_1024(boxes).tolist() == [[75, 180, 126, 221], [-2, -1, 23, 8]]
    float_boxes = np.array([[101.0, 201.0, 51.0, 41.0]])
    assert xyxy_from_boxes_1024(float_boxes).tolist() == [[75.5, 180.5, 126.5, 221.5]]


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


def test_training_keeps_one_drawn_predicate_per_pair(tiny_vg):
    # image 1 annotates the pair (0, 1) as p1, p1, p50: the reference draws one of the three rows
    train = VG150Index(tiny_vg, "train", num_val_images=0)
    draws = [train.annotations(0, torch.Generator().manual_seed(seed))["relations"].tolist() for seed in range(300)]
    assert all(len(d) == 1 and d[0][:2] == [0, 1] and d[0][2] in (0, 49) for d in draws)
    share = sum(d[0][2] == 0 for d in draws) / len(draws)
    assert 0.55 < share < 0.78  # 2/3: a duplicated predicate counts twice
    assert train.annotations(1)["relations"].tolist() == [[1, 0, 19]]


def test_other_splits_keep_every_relation(tiny_vg):
    test = VG150Index(tiny_vg, "test", num_val_images=0)
    assert test.annotations(0)["relations"].tolist() == [[0, 1, 4], [0, 1, 4]]
    unfiltered = VG150Index(tiny_vg, "train", num_val_images=0, filter_duplicate_rels=False)
    assert unfiltered.annotations(0)["relations"].tolist() == [[0, 1, 0], [0, 1, 0], [0, 1, 49]]


def test_sample_predicate_per_pair_keeps_pair_order():
    relations = np.array([[2, 0, 5], [0, 1, 3], [2, 0, 6], [0, 1, 3], [1, 2, 7]])
    for seed in range(20):
        kept = sample_predicate_per_pair(relations, torch.Generator().manual_seed(seed))
        assert kept[:, :2].tolist() == [[2, 0], [0, 1], [1, 2]]
        assert kept[0, 2] in (5, 6) and kept[1, 2] == 3 and kept[2, 2] == 7
    assert sample_predicate_per_pair(np.zeros((0, 3), dtype=np.int64)).shape == (0, 3)


def test_in_memory_and_lazy_reads_agree(tiny_vg):
    lazy = VG150Index(tiny_vg, "test", num_val_images=0)
    eager = VG150Index(tiny_vg, "test", num_val_images=0).load_into_memory()
    for key, value in lazy.annotations(0).items():
        np.testing.assert_array_equal(value, eager.annotations(0)[key])


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


@pytest.mark.skipif(not SHARED_VG.is_dir(), reason="no shared/data/vg next to this checkout")
def test_shared_dicts_and_zero_shot_files():
    assert hashlib.sha256((SHARED_VG / "zeroshot_triplet.pytorch").read_bytes()).hexdigest() == (
        "3ab7a6a815da643902115adeb96f188bfe963938b31d74fa7719c764b98fb88a")
    assert hashlib.sha256((SHARED_VG / "VG-SGG-dicts-with-attri.json").read_bytes()).hexdigest() == (
        "1255873ae0250555f59d20f8d1e5a4bdf22b331119502c850f765173b6963ca1")
    vocabulary = load_vocabulary(SHARED_VG)
    assert len(vocabulary.classes) == 150 and len(vocabulary.predicates) == 50
    assert vocabulary.predicates[0] == "above" and vocabulary.classes[0] == "airplane"
    triplets = load_zero_shot(SHARED_VG)
    assert triplets.shape == (5971, 3) and triplets.dtype == np.int64 and triplets.min() == 1
    assert triplets[:, 2].max() == 50 and triplets[:, :2].max() <= 150
    model_ids = zero_based(triplets)
    assert model_ids.min() == 0 and model_ids[:, 2].max() == 49
    np.testing.assert_array_equal(model_ids + 1, triplets)


def test_mismatched_image_data_is_a_clear_error(tiny_vg):
    (tiny_vg / "image_data.json").write_text("[]")
    with pytest.raises(UserError, match=r"image_data\.json: 0 images"):
        VG150Index(tiny_vg, "train")


def test_missing_h5_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match=r"VG-SGG-with-attri\.h5: missing; .* or point data\.root at"):
        VG150Index(tmp_path, "train")
