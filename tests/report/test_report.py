"""`itersg report` end to end: the HTML renders, is self-contained and shows the metrics files' numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from report_fixtures import ITERATIONS, VARIANTS, parse_report, write_json

from itersg.cli import main
from itersg.report import ReportRequest, write_report
from itersg.report.tables import OTHER_COLUMNS, RECALL_COLUMNS, reference_rows

RECALL_KEYS = [c.key for c in RECALL_COLUMNS]


def full_request(study, out: Path) -> ReportRequest:
    return ReportRequest(
        metrics=[str(study.root / "eval" / "*" / "*" / "metrics.json")], out=out, params=study.params,
        curves=study.curves, benchmarks=study.benchmarks, prepare=study.prepare,
    )


@pytest.fixture(scope="module")
def report(study, tmp_path_factory):
    """The full report of the fixture study: (html text, parsed elements)."""
    out = write_report(full_request(study, tmp_path_factory.mktemp("out") / "sub" / "report.html"))
    html = out.read_text()
    return html, parse_report(html)


def test_report_is_self_contained(report):
    html, parsed = report
    links = [(e["tag"], e.get("src") or e["href"]) for e in parsed.elements if e.get("src") or e.get("href")]
    assert links, "the report has figures"
    for tag, target in links:
        assert not re.match(r"(?i)^\s*(https?:)?//", target), f"<{tag}> loads an external resource: {target}"
        assert target.startswith(("data:", "#")), f"<{tag}> points outside the file: {target[:80]}"
    assert not any(e["tag"] in ("script", "link", "iframe") for e in parsed.elements)
    assert not re.search(r"(?i)@import|url\(\s*['\"]?(https?:)?//", html)


def test_images_are_embedded_pngs_with_alt_text(report):
    _, parsed = report
    images = [e for e in parsed.elements if e["tag"] == "img"]
    # 3 evaluated variants' per-predicate bars + training curves + R@50 vs speed
    assert len(images) == 5
    for image in images:
        assert image["src"].startswith("data:image/png;base64,")
        assert len(image["alt"]) > 20


def test_tables_have_captions_and_scoped_headers(report):
    _, parsed = report
    tables = sum(e["tag"] == "table" for e in parsed.elements)
    captions = sum(e["tag"] == "caption" for e in parsed.elements)
    assert tables >= 8 and captions >= tables - 2  # the two small tables inside <details> have one too
    headers = [e for e in parsed.elements if e["tag"] == "th"]
    assert all(e.get("scope") in ("col", "colgroup", "row") for e in headers)


EVALUATED = [("r101-detr", 100000), ("r101-detr", 250000), ("vovnet39-detr", 250000),
             ("vovnet39-centermask", 250000)]


@pytest.mark.parametrize(("variant", "iteration"), EVALUATED)
def test_our_cells_are_the_metrics_json_values(report, study, variant, iteration):
    _, parsed = report
    document = study.document(variant, iteration)
    for key in RECALL_KEYS:
        [cell] = parsed.cells(variant=variant, iteration=iteration, metric=key, source="ours")
        assert float(cell["data-value"]) == document["sgdet"][key]
        assert cell["text"] == f"{100 * document['sgdet'][key]:.2f}"
    for key in ("AP", "AP50", "APl"):
        [cell] = parsed.cells(variant=variant, iteration=iteration, metric=key, source="ours")
        assert cell["text"] == f"{document['bbox'][key]:.2f}"
    [cell] = parsed.cells(variant=variant, iteration=iteration, metric="SGMeanRecall@50", source="ours")
    assert cell["text"] == f"{document['sgdet']['SGMeanRecall@50']:.4f}"
    [cell] = parsed.cells(variant=variant, iteration=iteration, metric="s_per_image", source="ours")
    assert float(cell["data-value"]) == document["timing"]["s_per_image"]
    [cell] = parsed.cells(variant=variant, iteration=iteration, metric="params.total", source="ours")
    assert int(cell["data-value"]) == document["params"]["total"]


def test_published_cells_and_differences(report, study):
    """r101-detr @ 250k sits beside row A (IterativeSG_UBC): R@50 23.72 %, SGMeanRecall@50 0.1292."""
    _, parsed = report
    document = study.document("r101-detr", 250000)
    [published] = parsed.cells(variant="r101-detr", iteration=250000, metric="R@50", source="published")
    assert published["text"] == "23.72"
    [diff] = parsed.cells(variant="r101-detr", iteration=250000, metric="R@50", source="diff")
    expected = 100 * document["sgdet"]["R@50"] - 23.72
    assert float(diff["data-value"]) == pytest.approx(expected)
    assert diff["text"] == f"{expected:+.2f}".replace("-", "−")
    assert ("better" if expected > 0 else "worse") in diff["class"]
    # SGMeanRecall is a fraction on both sides: the difference stays a fraction
    [diff] = parsed.cells(variant="r101-detr", iteration=250000, metric="SGMeanRecall@50", source="diff")
    assert float(diff["data-value"]) == pytest.approx(document["sgdet"]["SGMeanRecall@50"] - 0.1292)
    # seconds per image: lower is better
    [diff] = parsed.cells(variant="r101-detr", iteration=250000, metric="s_per_image", source="diff")
    delta = document["timing"]["s_per_image"] - 0.100324
    assert ("better" if delta < 0 else "worse") in diff["class"]


def test_empty_published_cells_show_a_dash(report):
    _, parsed = report
    # row A publishes no numbers at 100k; row D (vovnet99-detr) none at 250k
    for variant, iteration in (("r101-detr", 100000), ("vovnet99-detr", 250000)):
        cells = parsed.cells(variant=variant, iteration=iteration, metric="R@50", source="published")
        assert [c["text"] for c in cells] == ["—"]
    # the corrected mR has no published counterpart at all
    [cell] = parsed.cells(variant="vovnet39-detr", iteration=250000, metric="mR_corrected@50",
                          source="published")
    assert cell["text"] == "—"
    # no Δ row in the recall table when nothing is published there; the T.P. count still compares
    assert not parsed.cells(variant="r101-detr", iteration=100000, metric="R@50", source="diff")
    [diff] = parsed.cells(variant="r101-detr", iteration=100000, metric="params.total", source="diff")
    assert diff["text"] == "0" and "same" in diff["class"]


def test_not_run_and_failed_rows(report):
    html, parsed = report
    status = {(e["data-variant"], e["data-iteration"]): e for e in parsed.elements if e.get("data-status")}
    evaluated = {(variant, str(iteration)) for variant, iteration in EVALUATED}
    for variant in VARIANTS:
        for iteration in ITERATIONS:
            key = (variant, str(iteration))
            if key in evaluated:
                assert key not in status
            elif key == ("vovnet57-centermask", "100000"):
                assert status[key]["data-status"] == "failed"
                assert "CUDA out of memory while loading checkpoint" in status[key]["text"]
            else:
                assert status[key]["data-status"] == "not run" and status[key]["text"].strip() == "not run"
    # in both main tables: 9 not run + 1 failed rows each
    assert len(status) == 10 and html.count('data-status="not run"') == 18
    assert "4 of 14" in html and "1 failed · 9 not run" in html


def test_parameter_check_marks_match_and_mismatch(report):
    _, parsed = report
    verdicts = {e["text"].strip(): e for e in parsed.elements if e.get("data-check")}
    checks = {e["data-check"] for e in parsed.elements if e.get("data-check")}
    assert checks == {"match", "mismatch", "not run"}
    rows = {e["data-variant"]: e for e in parsed.elements if e["tag"] == "tr" and e.get("data-variant")}
    assert set(rows) == set(VARIANTS)
    by_variant = {}
    for element in parsed.elements:
        if element["tag"] == "tr" and element.get("data-variant"):
            current = element["data-variant"]
        if element.get("data-check"):
            by_variant[current] = element["data-check"]
    assert by_variant["r101-detr"] == "match"
    assert by_variant["vovnet39-centermask"] == "match"
    assert by_variant["vovnet39-detr"] == "mismatch"
    assert by_variant["vovnet99-detr"] == "not run"
    assert "✗ mismatch" in verdicts and "✓ match" in verdicts


def test_provenance_and_notes(report, study):
    html, _ = report
    from itersg.report.provenance import sha256_file

    assert sha256_file(study.params) in html
    assert "ab" * 32 in html  # dataset checksum from the prepare JSON
    assert "<details><summary>The params file used</summary>" in html
    assert "NVIDIA A100-SXM4-80GB × 1" in html
    assert re.search(r"FPN level feeding the transformer.*?<b>P7</b>", html, re.S)
    assert "inert" in html and "2·R·mR/(R+mR)" in html and "slot-0" in html
    assert "published B.P. (not the backbone that runs here)" in html
    # Snakemake benchmarks: the two train jobs sum to 1:30:00
    assert re.search(r'data-rule="train".*?1:30:00', html)
    for package in ("python", "torch", "torchvision", "timm", "numpy", "snakemake", "dvc"):
        assert f'<th scope="col">{package}</th>' in html


def test_curves_use_the_dvclive_logs(report):
    html, parsed = report
    [image] = [e for e in parsed.elements if e["tag"] == "img" and e["alt"].startswith("Training curves")]
    for title in ("training loss", "learning rate", "validation R@50", "validation mR@50"):
        assert f"{title} (r101-detr, vovnet39-detr)" in image["alt"]  # NAME=DIR and parent-folder naming
    assert "training loss — r101-detr: <code>plots/metrics/train/loss.tsv</code> (25 points" in html
    assert "training loss — vovnet39-detr: <code>plots/metrics/train/loss.tsv</code> (20 points" in html
    assert "loss_bbox.tsv" not in html  # the total loss is plotted, not a component
    assert re.search(r'<th scope="row" class="left">train/loss_bbox</th><td class="num">0\.05', html), \
        "last values of dvclive's metrics.json are listed"


def test_predicates_are_ordered_by_training_frequency(report):
    html, parsed = report
    assert "thirds of the 12 predicates by frequency rank" in html
    groups = [e for e in parsed.elements if e.get("id") == "table-groups"]
    assert groups


def test_missing_pieces_are_reported_not_fatal(study, tmp_path):
    out = tmp_path / "report.html"
    path = study.metrics[("r101-detr", 250000)]
    write_report(ReportRequest(metrics=[str(path)], out=out))
    html = out.read_text()
    assert "Not shown: no training logs given" in html
    assert "Not shown: no Snakemake benchmark folder given" in html
    assert "no prepare summary given (--prepare): predicates ordered by name" in html
    assert "Not shown: no params file given" in html
    assert "1 of 1" in html
    parsed = parse_report(html)
    [cell] = parsed.cells(variant="r101-detr", iteration=250000, metric="R@50", source="ours")
    assert cell["text"] == f"{100 * study.document('r101-detr', 250000)['sgdet']['R@50']:.2f}"


def test_without_params_the_grid_comes_from_the_metrics_files(study, tmp_path):
    out = tmp_path / "report.html"
    files = [str(study.metrics[key]) for key in (("r101-detr", 100000), ("vovnet39-detr", 250000))]
    write_report(ReportRequest(metrics=files, out=out, benchmarks=tmp_path / "absent",
                               curves=[str(tmp_path)]))
    parsed = parse_report(out.read_text())
    not_run = {(e["data-variant"], e["data-iteration"]) for e in parsed.elements if e.get("data-status")}
    assert not_run == {("r101-detr", "250000"), ("vovnet39-detr", "100000")}
    html = out.read_text()
    assert "does not exist (no stage has run yet?)" in html
    assert "no dvclive metric files under" in html


def test_metrics_outside_the_study_are_shown_and_tagged(study, tmp_path):
    extra = write_json(tmp_path / "extra.json", {**study.document("r101-detr", 250000), "iteration": 300})
    out = tmp_path / "report.html"
    write_report(ReportRequest(metrics=[str(extra)], out=out, params=study.params))
    parsed = parse_report(out.read_text())
    assert parsed.cells(variant="r101-detr", iteration=300, metric="R@50", source="ours")
    assert "not in study" in out.read_text()


def test_cli_writes_atomically_and_reports_bad_input(study, tmp_path, capsys):
    out = tmp_path / "reports" / "report.html"
    args = ["report", "--metrics", str(study.root / "eval" / "**" / "metrics.json"), "--out", str(out),
            "--params", str(study.params), "--prepare", str(study.prepare), "--title", "My <study>"]
    assert main(args) == 0
    assert "<title>My &lt;study&gt;</title>" in out.read_text()
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temporary file left behind
    bad = write_json(tmp_path / "bad" / "metrics.json",
                     {"variant": "r101-detr", "iteration": 5, "status": "ok"})
    before = out.read_text()
    assert main(["report", "--metrics", str(bad), "--out", str(out)]) == 2
    assert f"itersg: error: {bad}: missing field 'sgdet'" in capsys.readouterr().err
    assert out.read_text() == before, "a failed run leaves the previous report untouched"


def test_same_inputs_give_the_same_html(study, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = write_report(full_request(study, tmp_path / "a.html")).read_bytes()
    second = write_report(full_request(study, tmp_path / "b.html")).read_bytes()
    assert first == second
    assert b"2023-11-14 22:13:20 UTC" in first


def test_every_published_study_row_is_reachable():
    """Each lettered row A-G at 100k and 250k maps to exactly one variant."""
    from itersg.report.tables import published_row

    rows = reference_rows()
    found = {published_row(v, i, rows)["ref"] for v in VARIANTS for i in ITERATIONS}
    assert found == set("ABCDEFG")
    assert published_row("r101-detr", 250000, rows)["project"] == "IterativeSG_UBC"
    assert published_row("r101-detr", 150000, rows) is None  # IterativeSG_ETRI rows are not the study's
    assert {c.key for c in OTHER_COLUMNS} >= {"AP", "s_per_image", "params.total", "SGMeanRecall@100"}


def test_nan_recall_shows_a_dash(study, tmp_path):
    document = study.document("r101-detr", 250000)
    document["sgdet"]["zR@20"] = float("nan")  # json writes NaN, as Python's json module does for nan
    path = write_json(tmp_path / "m.json", document)
    out = write_report(ReportRequest(metrics=[str(path)], out=tmp_path / "r.html"))
    parsed = parse_report(out.read_text())
    [ours] = parsed.cells(variant="r101-detr", iteration=250000, metric="zR@20", source="ours")
    [diff] = parsed.cells(variant="r101-detr", iteration=250000, metric="zR@20", source="diff")
    assert ours["text"] == diff["text"] == "—" and ours["data-value"] == ""


def test_params_overrides_change_the_study_grid(study, tmp_path):
    out = tmp_path / "report.html"
    metrics = str(study.metrics[("r101-detr", 250000)])
    overrides = ["study.eval_iterations=[250000]", "study.variants=[r101-detr,vovnet39-detr]"]
    assert main(["report", "--metrics", metrics, "--out", str(out), "--params", str(study.params),
                 *[arg for o in overrides for arg in ("--set", o)]]) == 0
    html = out.read_text()
    assert "1 of 2" in html and html.count('data-status="not run"') == 2  # vovnet39-detr @ 250k, two tables
    assert "<code>study.eval_iterations=[250000]</code>" in html


def test_demo_mode_greys_out_the_parameter_check(study, tmp_path):
    out = tmp_path / "report.html"
    metrics = str(study.metrics[("r101-detr", 250000)])
    assert main(["report", "--metrics", metrics, "--out", str(out), "--params", str(study.params)]) == 0
    assert 'id="summary-params" data-check="not applicable"' not in out.read_text()
    assert main(["report", "--metrics", metrics, "--out", str(out), "--params", str(study.params),
                 "--set", "mode=demo"]) == 0
    card = re.search(r'<div class="([^"]*)" id="summary-params"[^>]*>(.*?)</div>\s*</div>', out.read_text(), re.S)
    assert card.group(1) == "card" and "not applicable" in card.group(2)


def test_metrics_without_timing_and_params(study, tmp_path):
    document = study.document("r101-detr", 250000)
    del document["timing"], document["params"]
    out = write_report(ReportRequest(metrics=[str(write_json(tmp_path / "m.json", document))],
                                     out=tmp_path / "r.html"))
    html = out.read_text()
    parsed = parse_report(html)
    [cell] = parsed.cells(variant="r101-detr", iteration=250000, metric="s_per_image", source="ours")
    assert cell["text"] == "—"
    assert 'data-check="not measured"' in html
    assert "Not shown: no evaluated checkpoint with both R@50 and seconds per image" in html


def test_speaq_row_sits_beside_the_published_speaq_row(study, tmp_path):
    from report_fixtures import metrics_document

    document = metrics_document("r101-detr-speaq", 150000, 7, 93328270, 42394816)
    metrics = write_json(tmp_path / "eval" / "r101-detr-speaq" / "150000" / "metrics.json", document)
    params = tmp_path / "params.yaml"
    params.write_text("mode: full\nstudy:\n  variants: [r101-detr, r101-detr-speaq]\n"
                      "variants:\n  r101-detr: {}\n"
                      "  r101-detr-speaq: {iterations: 150000, batch_size: 20, eval_iterations: [150000]}\n")
    out = tmp_path / "report.html"
    write_report(ReportRequest(metrics=[str(study.metrics[("r101-detr", 250000)]), str(metrics)], out=out,
                               params=params))
    html = out.read_text()
    parsed = parse_report(html)
    [published] = parsed.cells(variant="r101-detr-speaq", iteration=150000, metric="R@50", source="published")
    assert published["text"] == "32.06"  # SpeaQ's released checkpoint
    [diff] = parsed.cells(variant="r101-detr-speaq", iteration=150000, metric="R@50", source="diff")
    assert float(diff["data-value"]) == pytest.approx(100 * document["sgdet"]["R@50"] - 32.06)
    [published] = parsed.cells(variant="r101-detr-speaq", iteration=150000, metric="mR@100", source="published")
    assert published["text"] == "17.60"
    # SpeaQ's grid is its own checkpoint; r101-detr keeps the study's two
    assert not parsed.cells(variant="r101-detr-speaq", iteration=250000, metric="R@50", source="published")
    assert parsed.cells(variant="r101-detr", iteration=100000, metric="R@50", source="published")
    assert "not in study" not in html


def test_egtr_row_and_its_speed_note(study, tmp_path):
    """egtr-r50 @ 67,650 sits beside EGTR's published row, with the note on how EGTR timed its s/img."""
    from report_fixtures import metrics_document

    document = metrics_document("egtr-r50", 67650, 11, 42510356, 23454912)
    metrics = write_json(tmp_path / "eval" / "egtr-r50" / "67650" / "metrics.json", document)
    out = write_report(ReportRequest(metrics=[str(study.metrics[("r101-detr", 250000)]), str(metrics)],
                                     out=tmp_path / "report.html"))
    html = out.read_text()
    parsed = parse_report(html)
    published = {metric: parsed.cells(variant="egtr-r50", iteration=67650, metric=metric, source="published")[0]
                 for metric in ("R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100", "AP50", "AP", "s_per_image")}
    assert {m: c["text"] for m, c in published.items()} == {
        "R@20": "23.50", "R@50": "30.20", "R@100": "34.40", "mR@20": "5.50", "mR@50": "7.90", "mR@100": "10.10",
        "AP50": "30.55", "AP": "—", "s_per_image": "0.0680"}
    [diff] = parsed.cells(variant="egtr-r50", iteration=67650, metric="R@50", source="diff")
    assert float(diff["data-value"]) == pytest.approx(100 * document["sgdet"]["R@50"] - 30.2)
    assert 'data-check="match"' in html  # 42,510,356 parameters, as counted from EGTR's code
    # the note: a link on EGTR's published lines (both tables), the paragraph under the speed table, the notes list
    links = [e for e in parsed.elements if e["tag"] == "a" and "note-mark" in e.get("class", "")]
    assert [e["data-ref"] for e in links] == ["EGTR", "EGTR"] and links[0]["href"] == "#published-note-EGTR"
    [paragraph] = re.findall(r'<p class="note published-note" id="published-note-EGTR"[^>]*>(.*?)</p>', html, re.S)
    [item] = re.findall(r'<li data-ref="EGTR">(.*?)</li>', html, re.S)
    for text in (paragraph, item):
        assert "600/1000" in text and "V100" in text and "800/1333" in text
    assert "egtr-r50" in paragraph
    # the r101-detr row has no note
    assert html.count("note-mark") == 2


def test_reports_without_a_noted_row_have_no_published_note(report):
    html, _ = report
    assert "published-note" not in html and "note-mark" not in html
