"""Every HTML report opened in headless Chromium, offline: plots render, no errors, no requests, no injection."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.reports.cdp import chromium
from tests.reports.conftest import HOSTILE_USER
from vfanalytics.reports import REPORTS

pytestmark = pytest.mark.integration

PLOTS_READY = ("Array.from(document.querySelectorAll('.vfa-figure .plotly-graph-div'))"
               ".every(d => d.querySelector('svg.main-svg') !== null)")
PROBES = {
    "containers": "document.querySelectorAll('.vfa-figure').length",
    "plot_divs": "document.querySelectorAll('.vfa-figure .plotly-graph-div').length",
    "with_svg": "Array.from(document.querySelectorAll('.vfa-figure .plotly-graph-div'))"
                ".filter(d => d.querySelector('svg.main-svg') && d.querySelectorAll('svg.main-svg g').length > 3).length",
    "text": "document.body.innerText",
    "pwned": "typeof window.__pwned",
    "svg_text": "Array.from(document.querySelectorAll('svg text')).map(t => t.textContent).join('\\n')",
}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    binary = require_binary("chromium")
    with chromium(binary, tmp_path_factory.mktemp("chromium-profile")) as b:
        yield b


def _check_offline_and_clean(visit, page: Path) -> None:
    # data:/blob: URLs are made in the page (plotly draws heatmaps as data-URI images): not network
    others = [u for u in visit.requests if u != page.resolve().as_uri() and not u.startswith(("data:", "blob:"))]
    assert others == [], f"{page.name} made requests: {others[:5]}"
    assert visit.console_errors == [], f"{page.name} console errors: {visit.console_errors[:3]}"
    assert visit.exceptions == [], f"{page.name} exceptions: {visit.exceptions[:2]}"
    assert visit.dialogs == []


@pytest.mark.parametrize("name", REPORTS)
def test_report_page_renders_every_plot_offline(browser, demo_reports, name: str) -> None:
    page = demo_reports.run_dir / f"{name}.html"
    visit, values = browser.visit(page, settle_js=PLOTS_READY, probes=PROBES)
    _check_offline_and_clean(visit, page)
    assert values["containers"] >= 2
    assert values["plot_divs"] == values["containers"] == values["with_svg"]
    assert "Traceback" not in values["text"]


def test_index_page_links_every_report(browser, demo_reports) -> None:
    visit, values = browser.visit(demo_reports.index, probes={
        "links": "Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))"})
    _check_offline_and_clean(visit, demo_reports.index)
    for name in REPORTS:
        assert f"{demo_reports.run_dir.name}/{name}.html" in values["links"]


def test_a_label_containing_script_shows_as_text(browser, hostile_report) -> None:
    page = hostile_report.run_dir / "token_usage.html"
    raw = page.read_text()
    assert HOSTILE_USER not in raw  # never written as markup
    visit, values = browser.visit(page, settle_js=PLOTS_READY, probes=PROBES)
    _check_offline_and_clean(visit, page)
    assert values["pwned"] == "undefined"
    assert HOSTILE_USER in values["text"]  # the top-consumer table and the summary show it literally
    assert "proj-<b>bold</b>" in Path(hostile_report.outcomes[0].output_dir / "tokens_by_project_id.csv").read_text()
    assert values["with_svg"] == values["containers"] >= 2
