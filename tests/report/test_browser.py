"""The report in a real browser: headless Chromium loads it offline with no console error and draws it."""

from __future__ import annotations

import io

import pytest
from gallery_fixtures import VARIANTS
from headless_chromium import find_chromium, load_page
from PIL import Image

from itersg.report import ReportRequest, write_report
from itersg.report.gallery import MAX_BYTES

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


REPORT_MAX_BYTES = 6_000_000  # docs/reproduce.md: a report stays under 6 MB
GALLERY_CHECKS = {
    "gallery": "[...document.querySelectorAll('#gallery img')].map(i => [i.complete, i.naturalWidth, i.alt,"
               " i.closest('article').dataset.imageId, i.closest('figure').dataset.variant || null])",
    "hits": "document.querySelectorAll('#gallery li[data-hit=\"1\"]').length",
    "misses": "document.querySelectorAll('#gallery li[data-hit=\"0\"]').length",
}


def test_the_gallery_loads_with_alt_text_naming_image_and_variant(evaluated, tmp_path):
    out = write_report(ReportRequest(metrics=[str(p) for p in evaluated.metrics], out=tmp_path / "report.html",
                                     params=evaluated.params, prepare=evaluated.prepare))
    page = load_page(out.resolve().as_uri() + "#gallery", tmp_path / "profile", 1400, 2000, GALLERY_CHECKS)
    assert page.errors == [] and page.warnings == []
    images = page.values["gallery"]
    assert len(images) >= 7 * (1 + len(VARIANTS))
    for complete, width, alt, image_id, variant in images:
        assert complete and width > 0, alt
        assert alt.startswith(f"Test image {image_id}: ")
        assert alt.endswith("ground-truth boxes") if variant is None else f"predicted by {variant} @ " in alt
    assert page.values["hits"] > 0 and page.values["misses"] > 0
    assert out.stat().st_size < REPORT_MAX_BYTES
    html = out.read_text()
    embedded = sum(len(rest.split('"', 1)[0]) for rest in html.split('src="')[1:] if rest.startswith("data:image/jpeg"))
    assert 0 < embedded <= MAX_BYTES
