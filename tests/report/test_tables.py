"""Table logic: published mapping, units of the differences, the T.P. check, predicate order and groups."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from pathlib import Path

import pytest
from report_fixtures import FREQUENCIES, PREDICATES

from itersg.report.inputs import PrepareSummary
from itersg.report.tables import (
    OTHER_COLUMNS,
    RECALL_COLUMNS,
    Cell,
    check_total_params,
    difference_cell,
    predicate_order,
    published_row,
    published_total_params,
    reference_rows,
)

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "itersg" / "report"
SHARED_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "reference_results.csv"


def column(key):
    return next(c for c in RECALL_COLUMNS + OTHER_COLUMNS if c.key == key)


def test_packaged_reference_matches_its_provenance_note():
    data = (PACKAGE / "reference_results.csv").read_bytes()
    note = (PACKAGE / "reference_results.PROVENANCE.md").read_text()
    [recorded] = re.findall(r"sha256:\*\* `([0-9a-f]{64})`", note)
    assert hashlib.sha256(data).hexdigest() == recorded
    assert "etri-iterativeSG README" in note
    assert "## The EGTR row" in note and "67,650" in note and "34.3" in note  # the R@100 it does not use


@pytest.mark.skipif(not SHARED_CSV.is_file(), reason="shared/ is not beside the checkout")
def test_packaged_reference_extends_the_shared_copy():
    """The shared copy's rows, unchanged and in order, then the rows added here (EGTR) and the ``note`` column."""
    shared = list(csv.DictReader(io.StringIO(SHARED_CSV.read_text())))
    packaged = reference_rows()
    assert [{k: row[k] for k in shared[0]} for row in packaged[:len(shared)]] == shared
    assert [row["ref"] for row in packaged[len(shared):]] == ["EGTR"]


@pytest.mark.parametrize(("measured", "published", "evaluated", "verdict"), [
    (93251470, 93251470, True, "match"), (93251471, 93251470, True, "mismatch"),
    (None, 93251470, False, "not run"), (None, 93251470, True, "not measured"),
    (5, None, True, "no published count"),
])
def test_total_parameter_check(measured, published, evaluated, verdict):
    assert check_total_params(measured, published, evaluated) == verdict


def test_published_totals_are_the_spec_counts():
    rows = reference_rows()
    expected = {"r101-detr": 93251470, "vovnet39-detr": 79102606, "vovnet57-detr": 95362190,
                "vovnet99-detr": 123408270, "vovnet39-centermask": 103168224,
                "vovnet57-centermask": 119427808, "vovnet99-centermask": 147473888}
    for variant, total in expected.items():
        assert published_total_params(variant, rows)[0] == total
    assert published_total_params("r101-detr", rows)[1] == "44.5 M"
    assert published_total_params("resnet50-detr", rows) == (None, "")
    assert published_total_params("r101-detr-speaq", rows) == (93328270, "")


def test_speaq_has_the_released_checkpoint_row():
    rows = reference_rows()
    row = published_row("r101-detr-speaq", 150000, rows)
    assert row["project"] == "SpeaQ (released checkpoint)"
    # as trained: alpha 0.07, UNDERSAMPLE_PARAM 1.5 (the CSV's beta column; itersg's beta 0.75), batch 20
    assert (row["alpha"], row["beta"], row["batch"], row["total_params"]) == ("0.07", "1.5", "20", "93328270")
    assert (row["R@20"], row["R@50"], row["R@100"], row["mR@100"], row["zR@100"]) == (
        "25.08", "32.06", "35.54", "17.60", "4.63")
    assert published_row("r101-detr-speaq", 250000, rows) is None
    assert published_row("vovnet39-detr-speaq", 150000, rows) is None
    assert published_row("r101-detr", 150000, rows) is None


def test_egtr_has_its_published_row_at_the_catalogue_recipe():
    from itersg.catalog import VARIANTS

    rows = reference_rows()
    iterations = VARIANTS["egtr-r50"].recipe.iterations
    assert iterations == 67650
    row = published_row("egtr-r50", iterations, rows)
    assert (row["project"], row["backbone"], row["detector"]) == (
        "EGTR (released checkpoint)", "ResNet-50", "Deformable DETR")
    assert (row["gpu"], row["n_gpus"], row["batch"], row["iterations"]) == ("V100", "8", "64", "67650")
    assert [row[f"R@{k}"] for k in (20, 50, 100)] == ["23.5", "30.2", "34.4"]
    assert [row[f"mR@{k}"] for k in (20, 50, 100)] == ["5.5", "7.9", "10.1"]
    assert row["AP50"] == "30.55" and row["AP"] == "" and row["SGMeanRecall@50"] == ""
    assert float(row["inference_s_per_img"]) == pytest.approx(1 / 14.7, abs=5e-5)  # 14.7 FPS
    assert "600/1000" in row["note"] and "V100" in row["note"] and "800/1333" in row["note"]
    assert row["source"]
    assert published_total_params("egtr-r50", rows) == (42510356, "")
    assert published_row("egtr-r50", 250000, rows) is None
    assert published_row("r101-detr", 67650, rows) is None
    # only the EGTR row carries a note so far
    assert [r["ref"] for r in rows if r["note"]] == ["EGTR"]


def test_published_notes_are_one_per_noted_row_shown():
    from itersg.report.inputs import MetricsSelection
    from itersg.report.tables import build_rows, published_notes

    rows = build_rows(MetricsSelection([]), ["r101-detr", "egtr-r50"],
                      {"r101-detr": [250000], "egtr-r50": [67650, 100]}, reference_rows())
    assert [(row.variant, row.iteration, row.reference_note != "") for row in rows] == [
        ("r101-detr", 250000, False), ("egtr-r50", 100, False), ("egtr-r50", 67650, True)]
    [note] = published_notes(rows)
    assert (note.ref, note.project, note.variants) == ("EGTR", "EGTR (released checkpoint)", ("egtr-r50",))
    assert note.note == rows[2].reference_note
    assert published_notes(rows[:1]) == []


def test_recall_difference_is_in_percentage_points():
    # ours 0.2347 (fraction) vs published 23.72 (percent) -> -0.25 pp, worse
    cell = difference_cell(Cell("23.47", 0.2347), Cell("23.72", 23.72), column("R@50"))
    assert cell.value == pytest.approx(-0.25)
    assert cell.text == "−0.25" and "worse" in cell.css


def test_sgmeanrecall_difference_stays_a_fraction():
    cell = difference_cell(Cell("", 0.1300), Cell("", 0.1292), column("SGMeanRecall@50"))
    assert cell.value == pytest.approx(0.0008) and cell.text == "+0.0008" and "better" in cell.css


def test_differences_below_the_rounding_are_neutral():
    cell = difference_cell(Cell("", 0.23721), Cell("", 23.72), column("R@50"))
    assert "same" in cell.css
    cell = difference_cell(Cell("", 0.2), Cell("", None), column("R@50"))
    assert cell.value is None and cell.text == "—"


def test_faster_is_better():
    assert "better" in difference_cell(Cell("", 0.09), Cell("", 0.1), column("s_per_image")).css
    assert "worse" in difference_cell(Cell("", 0.11), Cell("", 0.1), column("s_per_image")).css


def test_predicates_by_training_frequency_in_thirds(tmp_path):
    prepare = PrepareSummary(tmp_path / "prepare.json", PREDICATES, FREQUENCIES, {})
    order = predicate_order([*PREDICATES, "flying in"], prepare)
    assert order.names[:3] == ["on", "has", "of"]  # 9000, 7000, 6000
    assert order.names[-2:] == ["sitting on", "flying in"]  # least frequent, then the unknown one
    assert order.groups == ["head"] * 4 + ["body"] * 4 + ["tail"] * 4 + [None]
    assert "flying in" in order.note


def test_predicates_without_prepare_are_ordered_by_name():
    order = predicate_order(["on", "above", "has"], None)
    assert order.names == ["above", "has", "on"] and order.groups == [None] * 3
    assert "ordered by name" in order.note


def test_any_parameter_difference_is_a_mismatch():
    total = column("params.total")
    assert "worse" in difference_cell(Cell("", 79102607), Cell("", 79102606.0), total).css
    assert "worse" in difference_cell(Cell("", 79102605), Cell("", 79102606.0), total).css
    same = difference_cell(Cell("", 79102606), Cell("", 79102606.0), total)
    assert "same" in same.css and same.text == "0"


def test_each_variant_has_its_own_checkpoints_in_the_study_grid():
    from itersg.report.inputs import MetricsSelection
    from itersg.report.tables import study_keys

    grid = study_keys(MetricsSelection([]), ["r101-detr", "r101-detr-speaq"],
                      {"r101-detr": [250000, 100000], "r101-detr-speaq": [150000]})
    assert grid == [("r101-detr", 100000, True), ("r101-detr", 250000, True), ("r101-detr-speaq", 150000, True)]
    assert study_keys(MetricsSelection([]), ["a", "b"], [2, 1]) == [("a", 1, True), ("a", 2, True),
                                                                    ("b", 1, True), ("b", 2, True)]
