"""Metrics no evaluation can produce, and evaluations one table cannot compare, given to ``itersg report``.

A number out of its range (a negative or infinite AP, negative seconds per image, ...) is refused with
the file and the field; so is a second metrics file of another split or of other data (other predicate
names, another number of images in the split) than the first.
"""

from __future__ import annotations

import json

from bad_inputs_cases import Case

SECOND = "eval2/metrics.json"  # a second evaluation (another iteration) beside the demo's
DIFFERENT = "one table cannot compare"


def _report(*names: str):
    """``itersg report`` of the demo's metrics file and ``names`` (relative to the demo's folder)."""
    return lambda f: ["report", "--metrics", str(f.metrics), *(str(f.root / n) for n in names),
                      "--out", str(f.root / "report.html")]


def _edited(edit, name: str | None = None):
    """Write the demo's metrics changed by ``edit(document)`` to ``name``, else over the demo's file."""
    def setup(f) -> None:
        document = json.loads(f.metrics.read_text())
        edit(document)
        path = f.root / name if name else f.metrics
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2))  # infinity as Python's json writes it: Infinity
    return setup


def _set(block: str, key: str, value):
    return lambda document: document[block].update({key: value})


def _second(*edits):
    """A second evaluation (iteration 4) changed by ``edits``."""
    def edit(document) -> None:
        document["iteration"] = 4
        for change in edits:
            change(document)
    return edit


def _out_of_range(block: str, key: str, value, text: str) -> Case:
    return Case(_report(), lambda f: (f"{f.metrics}: field '{block}.{key}' = ", text),
                setup=_edited(_set(block, key, value)))


def _other_predicates(document) -> None:
    document["per_predicate_recall"] = {k: {"on": 0.1, "has": 0.2} for k in document["per_predicate_recall"]}


def _incomparable(edit, field: str) -> Case:
    return Case(_report(SECOND), lambda f: (f"{f.root / SECOND}: field '{field}'", DIFFERENT),
                setup=_edited(_second(edit), SECOND))


def _table_of_two(f) -> None:
    html = (f.root / "report.html").read_text()
    assert 'data-iteration="2"' in html and 'data-iteration="4"' in html, "an evaluation is missing"


CASES = {
    "ap-negative": _out_of_range("bbox", "AP", -1.0, "not a percentage in [0, 100]"),
    "ap-infinite": _out_of_range("bbox", "AP", float("inf"), "not a percentage in [0, 100]"),
    "ap50-above-100": _out_of_range("bbox", "AP50", 130.0, "not a percentage in [0, 100]"),
    "recall-infinite": _out_of_range("sgdet", "R@50", float("inf"), "not a fraction in [0, 1]"),
    "recall-negative": _out_of_range("sgdet", "mR@100", -0.1, "not a fraction in [0, 1]"),
    "seconds-per-image-negative": _out_of_range("timing", "s_per_image", -0.5, "not a positive, finite number"),
    "seconds-per-image-infinite": _out_of_range("timing", "s_per_image", float("inf"),
                                                "not a positive, finite number"),
    "parameter-count-negative": Case(_report(), lambda f: (f"{f.metrics}: field 'params.total'", "got -5"),
                                     setup=_edited(_set("params", "total", -5))),
    "iteration-negative": Case(_report(), lambda f: (f"{f.metrics}: field 'iteration'", "got -2"),
                               setup=_edited(lambda d: d.update(iteration=-2))),
    "split-unknown": Case(_report(), lambda f: (f"{f.metrics}: field 'split' must be one of", "'tset'"),
                          setup=_edited(lambda d: d.update(split="tset"))),
    "splits-mixed": _incomparable(lambda d: d.update(split="val"), "split"),
    "predicates-of-another-dataset": _incomparable(_other_predicates, "per_predicate_recall"),
    "split-of-another-size": _incomparable(_set("images", "expected", 99), "images.expected"),
    "two-evaluations-of-the-same-data": Case(_report(SECOND), "", setup=_edited(_second(), SECOND),
                                             check=_table_of_two),
}
