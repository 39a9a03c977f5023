"""The report's gallery: hit marks by the R@K rule, the seeded choice of images, the size cap."""

from __future__ import annotations

import re

import numpy as np
import pytest
from gallery_fixtures import VARIANTS, EvaluatedStudy

from itersg.config import load_params
from itersg.data.vg150 import VG150Index, image_ground_truth
from itersg.evaluation.predictions import PredictionsReader
from itersg.evaluation.sg_metrics import scene_graph_scores
from itersg.report import ReportRequest, write_report
from itersg.report.gallery import (
    MAX_BYTES,
    build_gallery,
    image_recall,
    match_triplets,
    most_disagreeing,
    most_tail,
    seeded_order,
)
from itersg.report.inputs import load_metrics, load_prepare
from itersg.report.tables import build_rows, latest_ok, reference_rows

NUM_PREDICATES = 3


def _prediction(boxes, labels, pairs, predicates, num_rows=None):
    """Predictions-file fields; rows ranked as given, each row's best predicate as given."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    rel_scores = np.full((len(pairs), NUM_PREDICATES + 1), 0.05, dtype=np.float32)
    rel_scores[np.arange(len(pairs)), predicates] = 0.8
    return {"boxes": np.asarray(boxes, dtype=np.float32), "labels": np.asarray(labels, dtype=np.int64),
            "scores": np.full(len(boxes), 0.9, dtype=np.float32), "rel_pairs": pairs, "rel_scores": rel_scores,
            "triplet_scores": np.linspace(1, 0.1, len(pairs)).astype(np.float32)}


# Ground truth: a person (class 0) at [0, 0, 10, 10], a cup (class 1) at [20, 0, 30, 10], a table (class 2)
# at [0, 20, 30, 40]; relations person-0-cup, cup-1-table, person-2-table.
GT = {"boxes": np.array([[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 30, 40]], dtype=np.float32),
      "labels": np.array([0, 1, 2]), "relations": np.array([[0, 1, 0], [1, 2, 1], [0, 2, 2]])}
# Predicted objects: 0 person IoU exactly 0.5 (counts), 1 cup exact, 2 table IoU 0.4878 (does not count),
# 3 a "cup" labelled as class 2 on the cup's box (wrong class), 4 table exact.
BOXES = [[0, 0, 10, 20], [20, 0, 30, 10], [0, 20, 30, 61], [20, 0, 30, 10], [0, 20, 30, 40]]
LABELS = [0, 1, 2, 2, 2]


def test_hit_marks_are_the_recall_matching_on_hand_made_cases():
    rows = [(0, 1), (1, 2), (1, 4), (0, 4), (0, 3), (0, 1)]
    predicates = [0, 1, 1, 0, 0, 1]
    prediction = _prediction(BOXES, LABELS, rows, predicates)
    hits = match_triplets(GT, prediction, NUM_PREDICATES)
    expected = np.zeros((3, 6), dtype=bool)
    expected[0, 0] = True   # person (IoU 0.5, inclusive) -0- cup
    expected[1, 2] = True   # cup -1- table 4 (table 2 has IoU 0.4878)
    # row 3: person -0- table: predicate 0 is not GT's 2; row 4: object 3 has the wrong class;
    # row 5: person -1- cup: wrong predicate
    np.testing.assert_array_equal(hits, expected)
    recall, recalled = image_recall(hits)
    assert recall == pytest.approx(2 / 3) and recalled.tolist() == [True, True, False]
    reference = scene_graph_scores([(GT, prediction)], NUM_PREDICATES).recall
    assert recall == pytest.approx(reference[50])


def test_the_recall_marks_count_only_the_first_k_triplets_as_r_at_k_does():
    filler = [(4, 1)] * 59  # table -0- cup: matches nothing
    rows, predicates = [*filler, (0, 4)], [0] * 59 + [2]  # person -2- table at rank 60
    prediction = _prediction(BOXES, LABELS, rows, predicates)
    hits = match_triplets(GT, prediction, NUM_PREDICATES)
    reference = scene_graph_scores([(GT, prediction)], NUM_PREDICATES).recall
    for k in (20, 50, 100):
        recall, recalled = image_recall(hits, k)
        assert recall == pytest.approx(reference[k])
        assert recalled[2] == (k == 100)
    assert hits[:, 59].tolist() == [False, False, True] and not hits[:, :59].any()


def test_no_triplet_or_no_relation_gives_no_recall_as_r_at_k_skips_the_image():
    empty = _prediction(BOXES, LABELS, [], [])
    recall, recalled = image_recall(match_triplets(GT, empty, NUM_PREDICATES))
    assert recall is None and recalled.tolist() == [False, False, False]


def test_the_choice_of_images_is_seeded_and_reasoned():
    ids = [5, 1, 9, 3, 7, 2]
    assert seeded_order(ids, 0) == seeded_order(list(reversed(ids)), 0)
    assert sorted(seeded_order(ids, 0)) == sorted(ids)
    assert seeded_order(ids, 0) != seeded_order(ids, 1) or seeded_order(ids, 0) != seeded_order(ids, 2)
    recalls = {1: [1.0, 1.0], 2: [1.0, 0.0], 3: [0.5, None], 4: [0.2, 0.7], 5: [0.0, 1.0]}
    assert most_disagreeing(recalls, exclude=set(), count=3) == [2, 5, 4]
    assert most_disagreeing(recalls, exclude={2}, count=1) == [5]
    assert most_tail({1: 0, 2: 3, 3: 1, 4: 3}, exclude={4}, count=3) == [2, 3]


def _latest(study: EvaluatedStudy):
    rows = build_rows(load_metrics([str(p) for p in study.metrics]), list(VARIANTS), None, reference_rows())
    return latest_ok(rows)


def test_the_gallery_marks_what_the_predictions_file_holds(evaluated):
    params = load_params(evaluated.params)
    gallery = build_gallery(_latest(evaluated), params, load_prepare(evaluated.prepare))
    reasons = [item.reason for item in gallery.images]
    assert reasons[:4] == ["drawn at random"] * 4
    assert sum(r.startswith("the variants disagree most") for r in reasons) == 3
    assert any(r.startswith("tail predicates: ") for r in reasons)
    assert len({item.image_id for item in gallery.images}) == len(gallery.images)
    index = VG150Index(evaluated.data, "test", 5, filter_duplicate_rels=False)
    position = {int(i): n for n, i in enumerate(index.image_ids)}
    for item in gallery.images:
        gt = image_ground_truth(index, position[item.image_id])
        assert len(item.truth.triplets) == len(gt["relations"])
        assert [v.variant for v in item.variants] == list(VARIANTS)
        for shown in item.variants:
            with PredictionsReader(evaluated.root / "eval" / shown.variant / "600" / "predictions.h5") as reader:
                prediction = reader.prediction(item.image_id)
            reference = scene_graph_scores([(gt, prediction)], reader.num_predicates).recall[50]
            assert shown.recall == pytest.approx(reference)
            assert shown.recall == pytest.approx(np.mean(shown.recalled))
            marks = [t.hit for t in shown.graph.triplets]
            assert all(marks) if shown.variant == VARIANTS[0] else marks in ([True] * len(marks), [False] * len(marks))
        if item.reason.startswith("the variants disagree most"):
            assert item.variants[0].recall == 1 and item.variants[1].recall == 0
    assert 0 < gallery.bytes <= MAX_BYTES


def test_the_same_settings_give_the_same_gallery_and_another_seed_another(evaluated):
    params = load_params(evaluated.params)
    first = build_gallery(_latest(evaluated), params, None)
    again = build_gallery(_latest(evaluated), params, None)
    other = build_gallery(_latest(evaluated), load_params(evaluated.params, ["report.gallery.seed=11"]), None)
    assert [i.image_id for i in first.images] == [i.image_id for i in again.images]
    assert [i.image_id for i in first.images] != [i.image_id for i in other.images]
    assert first.notes == ["no prepare summary (--prepare): no images picked for tail predicates"]
    assert not any(item.reason.startswith("tail") for item in first.images)


def test_one_variant_alone_has_no_disagreement_picks(evaluated):
    latest = {variant: row for variant, row in _latest(evaluated).items() if variant == VARIANTS[1]}
    gallery = build_gallery(latest, load_params(evaluated.params), load_prepare(evaluated.prepare))
    assert gallery.notes == ["one variant only: no images picked for disagreement between variants"]
    assert [v.variant for item in gallery.images for v in item.variants] == [VARIANTS[1]] * len(gallery.images)
    assert not any(item.reason.startswith("the variants disagree") for item in gallery.images)
    assert any(item.reason.startswith("tail predicates") for item in gallery.images)


def test_the_gallery_stops_at_its_size_cap(evaluated):
    params = load_params(evaluated.params)
    full = build_gallery(_latest(evaluated), params, None)
    capped = build_gallery(_latest(evaluated), params, None, max_bytes=full.bytes // 2)
    assert 0 < len(capped.images) < len(full.images) and capped.bytes <= full.bytes // 2
    assert capped.notes[-1].startswith(f"{len(capped.images)} of {len(full.images)} images shown")


def test_without_params_or_predictions_the_section_says_why(evaluated, tmp_path):
    latest = _latest(evaluated)
    assert build_gallery(latest, None, None).missing.startswith("no params file given")
    params = load_params(evaluated.params, ["report.gallery.images=0"])
    assert build_gallery(latest, params, None).missing == "report.gallery.images is 0"
    moved = tmp_path / "metrics.json"
    moved.write_text(evaluated.metrics[0].read_text())
    lonely = build_rows(load_metrics([str(moved)]), list(VARIANTS), None, reference_rows())
    gallery = build_gallery(latest_ok(lonely), load_params(evaluated.params), None)
    assert gallery.missing == "no predictions file beside the metrics files"
    assert gallery.notes == [f"r101-detr: no predictions file beside {moved}; not in the gallery"]


def test_the_report_shows_the_gallery_with_alt_text_per_image_and_variant(evaluated, tmp_path):
    out = write_report(ReportRequest(metrics=[str(p) for p in evaluated.metrics], out=tmp_path / "report.html",
                                     params=evaluated.params, prepare=evaluated.prepare))
    html = out.read_text()
    items = re.findall(r'<article class="gallery-item" id="gallery-(\d+)"', html)
    assert len(items) >= 7
    for image_id in items:
        assert f'alt="Test image {image_id}: ground-truth boxes"' in html
        for variant in VARIANTS:
            assert f'alt="Test image {image_id}: boxes predicted by {variant} @ 600"' in html
    assert html.count('data-hit="1"') > 0 and html.count('data-hit="0"') > 0


def test_an_unreadable_dataset_leaves_the_gallery_out_with_the_reason(evaluated, tmp_path):
    gone = tmp_path / "gone"
    out = write_report(ReportRequest(metrics=[str(p) for p in evaluated.metrics], out=tmp_path / "report.html",
                                     params=evaluated.params, overrides=[f"data.root={gone}"]))
    html = out.read_text()
    assert f'<p class="missing">Not shown: {gone}/VG-SGG-with-attri.h5: missing;' in html
    assert 'class="gallery-item"' not in html and 'id="table-recall"' in html
