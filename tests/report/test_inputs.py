"""Reading the report's inputs: bad files give a UserError naming the file and the field."""

from __future__ import annotations

import copy
import json

import pytest
from report_fixtures import metrics_document, write_benchmark, write_json

from itersg.errors import UserError
from itersg.report.inputs import (
    load_benchmarks,
    load_curves,
    load_metrics,
    load_prepare,
    parse_curve_spec,
)


@pytest.fixture
def good():
    return metrics_document("r101-detr", 250000, 0, 93251470, 42394816)


def _broken(document, path, value=KeyError):
    """A deep copy of ``document`` with the field at ``path`` (dotted) removed or replaced."""
    broken = copy.deepcopy(document)
    *parents, leaf = path.split(".")
    node = broken
    for part in parents:
        node = node[part]
    if value is KeyError:
        del node[leaf]
    else:
        node[leaf] = value
    return broken


def test_good_file_loads(tmp_path, good):
    path = write_json(tmp_path / "m.json", good)
    [metrics] = load_metrics([str(path)]).files
    assert (metrics.variant, metrics.iteration, metrics.status) == ("r101-detr", 250000, "ok")


def test_not_json_names_the_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("{not json")
    with pytest.raises(UserError, match=rf"{path}: not a valid JSON metrics file"):
        load_metrics([str(path)])


@pytest.mark.parametrize("field", ["variant", "iteration", "status", "sgdet", "sgdet.R@50", "sgdet.mR@100",
                                   "sgdet.SGMeanRecall@20", "bbox.APl", "timing.s_per_image", "params.total",
                                   "per_predicate_recall.50"])
def test_missing_field_is_named(tmp_path, good, field):
    path = write_json(tmp_path / "metrics.json", _broken(good, field))
    with pytest.raises(UserError, match=rf"{path}: missing field '{field}'"):
        load_metrics([str(path)])


@pytest.mark.parametrize(("field", "value", "message"), [
    ("iteration", "250k", "'iteration' must be an integer"),
    ("status", "done", "'status' must be one of"),
    ("sgdet.R@50", 23.47, r"'sgdet.R@50' = 23.47 is not a fraction"),
    ("sgdet.R@50", "0.2", "'sgdet.R@50' must be a number"),
    ("params.total", 9.3e7, "'params.total' must be an integer"),
    ("per_predicate_recall.50", [0.1], "must map predicate names to recalls"),
])
def test_wrong_values_are_named(tmp_path, good, field, value, message):
    path = write_json(tmp_path / "metrics.json", _broken(good, field, value))
    with pytest.raises(UserError, match=message):
        load_metrics([str(path)])


def test_failed_evaluation_needs_only_the_error(tmp_path):
    path = write_json(tmp_path / "m.json", {"variant": "r101-detr", "iteration": 5, "status": "failed",
                                            "error": "boom"})
    [metrics] = load_metrics([str(path)]).files
    assert metrics.status == "failed" and metrics.error == "boom"


def test_timing_and_params_are_optional(tmp_path, good):
    """`itersg metrics` scores a predictions file: no model to time or count."""
    del good["timing"], good["params"]
    path = write_json(tmp_path / "m.json", good)
    assert load_metrics([str(path)]).files[0].status == "ok"


def test_null_recall_is_allowed(tmp_path, good):
    """zR is undefined when no test image has a zero-shot triplet: null (or NaN) shows as a dash."""
    good["sgdet"]["zR@20"] = None
    path = write_json(tmp_path / "m.json", good)
    assert load_metrics([str(path)]).files[0].data["sgdet"]["zR@20"] is None


def test_missing_file_and_empty_glob(tmp_path):
    with pytest.raises(UserError, match="no such metrics file"):
        load_metrics([str(tmp_path / "absent.json")])
    empty_glob = str(tmp_path / "*" / "metrics.json")
    with pytest.raises(UserError, match="matched no metrics file"):  # nothing to report
        load_metrics([empty_glob])


def test_an_empty_glob_beside_files_is_noted(tmp_path, good):
    found = write_json(tmp_path / "a.json", good)
    empty_glob = str(tmp_path / "*" / "metrics.json")
    selection = load_metrics([str(found), empty_glob])
    assert len(selection.files) == 1 and selection.empty_patterns == [empty_glob]


def test_two_files_for_one_checkpoint_are_refused(tmp_path, good):
    first = write_json(tmp_path / "a.json", good)
    second = write_json(tmp_path / "b.json", good)
    with pytest.raises(UserError, match="also in"):
        load_metrics([str(first), str(second)])
    assert len(load_metrics([str(first), str(first)]).files) == 1  # the same file twice is fine


def test_prepare_summary(tmp_path):
    path = write_json(tmp_path / "p.json", {"predicate_names": ["on", "has"], "predicate_frequencies": [5, 3],
                                            "sha256": {"a.h5": "00"}})
    prepare = load_prepare(path)
    assert prepare.predicate_frequencies == [5, 3] and prepare.sha256 == {"a.h5": "00"}
    write_json(path, {"predicate_names": ["on", "has"], "predicate_frequencies": [5]})
    with pytest.raises(UserError, match="they must align"):
        load_prepare(path)
    write_json(path, {"predicate_names": ["on"]})
    with pytest.raises(UserError, match=f"{path}: missing field 'predicate_frequencies'"):
        load_prepare(path)


def test_curve_spec_naming(tmp_path):
    assert parse_curve_spec(f"vov={tmp_path}") == ("vov", tmp_path)
    directory = tmp_path / "r101-detr" / "dvclive"
    assert parse_curve_spec(str(directory))[0] == "r101-detr"


def test_dvclive_tsv_with_timestamp_column(tmp_path):
    tsv = tmp_path / "plots" / "metrics" / "val" / "R@50.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("timestamp\tstep\tR@50\n1700000000000\t0\t0.1\n1700000001000\t10\t0.2\n")
    (tmp_path / "metrics.json").write_text(json.dumps({"val": {"R@50": 0.2}, "step": 10}))
    [curve_dir] = load_curves([f"x={tmp_path}"])
    [curve] = curve_dir.curves
    assert (curve.name, curve.steps, curve.values) == ("val/R@50", [0.0, 10.0], [0.1, 0.2])
    assert curve_dir.summary == {"val/R@50": 0.2, "step": 10}
    tsv.write_text("step\tR@50\n0\tabc\n")
    with pytest.raises(UserError, match=r"R@50.tsv: column 'R@50' has 'abc'"):
        load_curves([f"x={tmp_path}"])


def test_benchmarks(tmp_path):
    write_benchmark(tmp_path / "train" / "r101-detr.tsv", 10.0)
    write_benchmark(tmp_path / "evaluate" / "r101-detr_100.tsv", 2.5)
    records = load_benchmarks(tmp_path)
    assert [(r.rule, r.wildcards, r.seconds) for r in records] == [
        ("evaluate", "r101-detr_100", 2.5), ("train", "r101-detr", 10.0)]
    assert records[0].max_rss_mb == pytest.approx(512.25)
    (tmp_path / "train" / "bad.tsv").write_text("seconds\n1\n")
    with pytest.raises(UserError, match=r"bad\.tsv: not a Snakemake benchmark file"):
        load_benchmarks(tmp_path)
