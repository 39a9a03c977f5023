"""The report in a real browser: headless Chromium loads it offline with no console error and draws it."""

from __future__ import annotations

import io

import pytest
from headless_chromium import find_chromium, load_page
from PIL import Image

from itersg.report import ReportRequest, write_report

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(find_chromium() is None,
                       reason="headless Chromium is not installed (apt-get install chromium; .ci/run does)"),
]

# Evaluated in the page after load: what a reader would see.
CHECKS = {
    "images": "[...document.images].map(i => [i.complete, i.naturalWidth, i.alt.length])",
    "external": "[...document.querySelectorAll('[src],[href]')].map(e => e.src || e.href)"
                ".filter(u => !u.startsWith('data:') && !u.includes('#'))",
    "tables": "document.querySelectorAll('table').length",
    "not_run": "document.querySelectorAll('td[data-status=\"not run\"]').length",
    "width": "document.documentElement.scrollWidth",
}


def test_report_loads_without_console_errors(study, tmp_path):
    out = write_report(ReportRequest(
        metrics=[str(p) for p in study.metrics.values()], out=tmp_path / "report.html", params=study.params,
        curves=study.curves, benchmarks=study.benchmarks, prepare=study.prepare))
    page = load_page(out.resolve().as_uri(), tmp_path / "profile", 1400, 3000, CHECKS)
    assert page.errors == [] and page.warnings == []
    images = page.values["images"]
    assert len(images) == 5 and all(complete and width > 0 and alt for complete, width, alt in images)
    assert page.values["external"] == []
    assert page.values["tables"] >= 8 and page.values["not_run"] == 18
    assert page.values["width"] <= 1400, "the page needs no horizontal scrolling at 1400 px"
    screenshot = Image.open(io.BytesIO(page.screenshot))
    assert screenshot.size == (1400, 3000)
    colours = screenshot.convert("RGB").resize((70, 150)).getcolors(maxcolors=100_000)
    assert len(colours) > 50, "the screenshot shows a drawn page, not a blank one"
    (tmp_path / "report.png").write_bytes(page.screenshot)


def test_console_errors_are_caught(tmp_path):
    """The check above can fail: a page with a script error and an unreachable resource is reported."""
    page_file = tmp_path / "bad.html"
    page_file.write_text('<html><body><img src="http://127.0.0.1:9/x.png" alt="x">'
                         '<script>console.error("boom"); missing_function();</script></body></html>')
    page = load_page(page_file.as_uri(), tmp_path / "profile", 400, 300)
    assert any("boom" in e for e in page.errors)
    assert any("missing_function" in e for e in page.errors)
    assert any("127.0.0.1:9" in e for e in page.errors)
