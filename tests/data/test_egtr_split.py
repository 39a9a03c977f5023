"""EGTR's training split (RelTR's conversion of VG150) against hand-worked answers and the synthetic data."""

import importlib.util
from pathlib import Path

import h5py
import numpy as np
import pytest

from itersg.data.egtr_split import (
    EGTRFilters,
    egtr_split_counts,
    egtr_split_image_indices,
    egtr_training_graphs,
    filter_relations,
    one_predicate_per_pair,
    overlapping,
)
from itersg.data.vg150 import VG150Index, xyxy_from_boxes_1024
from itersg.errors import UserError

# the hand-built files annotate only a few of the 50 predicates: check_structure says so, rightly
pytestmark = pytest.mark.filterwarnings("ignore:.*predicates have no relation in the training images")


def _write_vg():
    """tests/data/conftest.py's hand-built VG150 writer (conftest modules are not importable by name)."""
    spec = importlib.util.spec_from_file_location("egtr_vg_writer", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_vg


# cx, cy, w, h at 1024 -> x1y1x2y2: A (5, 5, 10, 10) -> 0..10; B (15, 5, 10, 10) -> 10..20 (touches A at
# x = 10: +1 pixel width 1, overlapping); C (16, 5, 10, 10) -> 11..21 (gap to A: width 10 - 11 + 1 = 0)
A, B, C = [5, 5, 10, 10], [15, 5, 10, 10], [16, 5, 10, 10]
TRAIN_RELATIONS = [(0, 1, 3), (0, 1, 3), (0, 1, 7), (0, 2, 4), (1, 2, 5), (1, 0, 3)]  # predicates 1-based


@pytest.fixture
def egtr_vg(tmp_path) -> Path:
    """Rows: 0 val (disjoint pair), 1 train (the filters' case), 2 train with only a disjoint pair,
    3 split 0 without relations, 4 test with only a disjoint pair, 5 test without relations."""
    images = [{"image_id": i, "width": w, "height": h} for i, w, h in
              ((1, 64, 64), (2, 512, 256), (3, 64, 64), (4, 64, 64), (5, 64, 64), (6, 64, 64))]
    return _write_vg()(
        tmp_path / "vg", images=images, split=[0, 0, 0, 0, 2, 2],
        boxes=[[A, C], [A, B, C], [A, C], [A], [A, C], [A]],
        labels=[[1, 2], [1, 2, 3], [4, 5], [6], [7, 8], [9]],
        relations=[[(0, 1, 1)], TRAIN_RELATIONS, [(0, 1, 2)], [], [(1, 0, 9)], []])


def test_touching_boxes_overlap_with_the_plus_one_pixel_and_disjoint_ones_do_not():
    boxes = xyxy_from_boxes_1024(np.array([A, B, C], dtype=np.int32))
    assert boxes.tolist() == [[0, 0, 10, 10], [10, 0, 20, 10], [11, 0, 21, 10]]
    relations = np.array([[0, 1, 0], [1, 0, 0], [0, 2, 0], [2, 0, 0], [1, 2, 0], [2, 2, 0]])
    assert overlapping(boxes, relations).tolist() == [True, True, False, False, True, True]


def test_filters_drop_disjoint_pairs_then_collapse_exact_duplicates():
    boxes = np.array([A, B, C], dtype=np.int32)
    relations = np.array(TRAIN_RELATIONS)
    # (0, 2, 4) is disjoint; np.unique keeps both predicates of pair (0, 1) once each, rows sorted
    assert filter_relations(boxes, relations).tolist() == [[0, 1, 3], [0, 1, 7], [1, 0, 3], [1, 2, 5]]
    kept = filter_relations(boxes, relations, EGTRFilters(filter_duplicate_rels=False))
    assert kept.tolist() == [[0, 1, 3], [0, 1, 3], [0, 1, 7], [1, 2, 5], [1, 0, 3]]
    assert filter_relations(boxes, relations, EGTRFilters(filter_non_overlap=False)).tolist() == \
        [[0, 1, 3], [0, 1, 7], [0, 2, 4], [1, 0, 3], [1, 2, 5]]


def test_one_predicate_per_pair_draws_by_row_with_the_given_generator():
    relations = np.array([[0, 1, 3], [0, 1, 3], [0, 1, 7], [1, 2, 5], [1, 0, 3]])
    drawn = one_predicate_per_pair(relations, np.random.default_rng(1))
    assert drawn[:, :2].tolist() == [[0, 1], [1, 2], [1, 0]]  # one row per pair, first-row order
    same = one_predicate_per_pair(relations, np.random.default_rng(1))
    assert np.array_equal(drawn, same)
    rng = np.random.default_rng(0)
    threes = sum(one_predicate_per_pair(relations, rng)[0, 2] == 3 for _ in range(3000))
    assert abs(threes / 3000 - 2 / 3) < 0.03  # predicate 3 is annotated twice out of three rows
    with pytest.raises(UserError, match="Generator"):
        filter_relations(np.array([A, B]), relations[:1], EGTRFilters(one_predicate_per_pair=True))


def test_splits_val_slice_and_an_emptied_image_dropped_from_train_but_kept_in_test(egtr_vg):
    rows = {split: egtr_split_image_indices(egtr_vg, split, num_val_images=1).tolist()
            for split in ("train", "val", "test")}
    # split 0 with relations: rows 0, 1, 2 -> val = the FIRST one; row 2 loses its only (disjoint)
    # relation and leaves train; test row 4 has the same disjoint pair and stays; rows 3, 5 have none
    assert rows == {"train": [1], "val": [0], "test": [4]}
    for split in ("val", "test"):  # the project's own val/test slices are the same images
        assert rows[split] == VG150Index(egtr_vg, split, num_val_images=1).rows.tolist()
    assert egtr_split_counts(egtr_vg, num_val_images=1) == {"train": 1, "val": 1, "test": 1}
    keep_all = EGTRFilters(drop_images_without_relations=False)
    assert egtr_split_counts(egtr_vg, 1, keep_all) == {"train": 3, "val": 1, "test": 2}
    assert egtr_split_image_indices(egtr_vg, "train", 1, keep_all).tolist() == [1, 2, 3]
    no_overlap_filter = EGTRFilters(filter_non_overlap=False)
    assert egtr_split_image_indices(egtr_vg, "train", 1, no_overlap_filter).tolist() == [1, 2]
    with pytest.raises(UserError, match="unknown split"):
        egtr_split_image_indices(egtr_vg, "training")


def test_training_graphs_feed_predicate_statistics_with_hand_worked_counts(egtr_vg):
    from itersg.models.relation.egtr import predicate_statistics

    (labels, boxes, relations), = list(egtr_training_graphs(egtr_vg, num_val_images=1))
    assert labels.tolist() == [0, 1, 2]
    # image 2 is 512 x 256: pixels = BOX_SCALE boxes x 512 / 1024
    assert boxes.tolist() == [[0, 0, 5, 5], [5, 0, 10, 5], [5.5, 0, 10.5, 5]]
    assert relations.tolist() == [[0, 1, 2], [0, 1, 6], [1, 0, 2], [1, 2, 4]]  # predicates 0-based
    expected = np.zeros((151, 151, 50), dtype=np.int64)
    expected[0, 1, 2] = expected[0, 1, 6] = expected[1, 0, 2] = expected[1, 2, 4] = 1
    for must_overlap in (True, False):
        counts = predicate_statistics(egtr_training_graphs(egtr_vg, num_val_images=1), must_overlap=must_overlap)
        assert np.array_equal(counts, expected)
    raw = egtr_training_graphs(egtr_vg, EGTRFilters(filter_duplicate_rels=False), num_val_images=1)
    assert predicate_statistics(raw, unique=False)[0, 1, 2] == 2  # the duplicate row counts twice


def _motifs_overlap(boxes: np.ndarray) -> np.ndarray:
    """[N, N] bool IoU > 0 written as Fast R-CNN's bbox_overlaps: +1 areas, intersection over union."""
    b = boxes.astype(np.float64)
    iw = (np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]) + 1).clip(0)
    ih = (np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]) + 1).clip(0)
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return iw * ih / (area[:, None] + area[None, :] - iw * ih) > 0


def test_counts_on_synthetic_data_match_a_direct_computation(synth_vg):
    num_val = 20
    counts = egtr_split_counts(synth_vg, num_val)
    project = {split: VG150Index(synth_vg, split, num_val) for split in ("train", "val", "test")}
    assert counts["val"] == len(project["val"]) and counts["test"] == len(project["test"])
    with h5py.File(synth_vg / "VG-SGG-with-attri.h5") as h5:
        boxes, pairs = h5["boxes_1024"][()], h5["relationships"][()]
    index = project["train"]
    kept = [row for row, b0, b1, r0, r1 in zip(index.rows, index.first_box, index.last_box, index.first_rel,
                                               index.last_rel, strict=True)
            if _motifs_overlap(xyxy_from_boxes_1024(boxes[b0:b1 + 1]))[tuple((pairs[r0:r1 + 1] - b0).T)].any()]
    assert 0 < len(kept) < len(index)  # the synthetic data has disjoint pairs: the filter removes images
    assert egtr_split_image_indices(synth_vg, "train", num_val).tolist() == kept
    assert counts["train"] == len(kept)
