"""The evidence page in a real headless Chromium (Debian's package, driven by playwright), served by
`cds-service serve` on loopback: it loads cleanly, the table and chart render, links resolve, it
reads on a phone, passes contrast checks and prints. Screenshots land in test-artifacts/."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

from cds_service.evidence import CHART_HEADING, CHART_ROW, study_groups
from tests.conftest import ROOT
from tests.test_matching import SURG

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
# Never a downloaded browser: the system Chromium, isolated from the network beyond loopback.
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
STUDIES = len(SURG.evidence.studies)

# WCAG 2.1 contrast ratio of each element's own text against the first opaque background behind it.
CONTRAST_JS = """
() => {
  const parse = c => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(',').map(Number); return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
  const channel = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = ({r, g, b}) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const background = el => { for (; el; el = el.parentElement) { const c = parse(getComputedStyle(el).backgroundColor);
    if (c && c.a > 0) return c; } return {r: 255, g: 255, b: 255, a: 1}; };
  const results = [];
  for (const el of document.querySelectorAll('body *')) {
    if (![...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue;
    const box = el.getBoundingClientRect();
    if (!box.width || !box.height || el.closest('title, desc')) continue;
    const style = getComputedStyle(el);
    const svg = el instanceof SVGElement;
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
    results.push({text: el.textContent.trim().slice(0, 40), tag: el.tagName,
      ratio: ratio(parse(svg ? style.fill : style.color), svg ? {r: 255, g: 255, b: 255} : background(el)),
      needed: size >= 24 || (bold && size >= 18.66) ? 3 : 4.5});
  }
  for (const el of document.querySelectorAll('svg.chart rect, .swatch')) {
    const style = getComputedStyle(el);
    results.push({text: 'design colour', tag: el.tagName, needed: 3,
      ratio: ratio(parse(el instanceof SVGElement ? style.fill : style.backgroundColor), {r: 255, g: 255, b: 255})});
  }
  return results;
}
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[BrowserContext]:
    if not CHROMIUM.is_file():
        reason = f"{CHROMIUM} not found: install Debian's chromium and chromium-driver packages (.ci/run does)"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport=DESKTOP,
        )
        yield context
        context.close()


class Visit:
    """A page opened in the browser, with everything that went wrong while it loaded."""

    def __init__(self, browser: BrowserContext, url: str, viewport: dict[str, int]) -> None:
        self.page: Page = browser.new_page()
        self.problems: list[str] = []
        self.page.on(
            "console",
            lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type in {"error", "warning"} else None,
        )
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url}"))
        self.page.on("response", lambda r: self.problems.append(f"{r.status}: {r.url}") if r.status >= 400 else None)
        self.page.set_viewport_size(viewport)
        response = self.page.goto(url, wait_until="load")
        assert response is not None and response.status == 200

    def evaluate(self, script: str) -> Any:
        return self.page.evaluate(script)


@pytest.fixture
def visit(browser, live_server) -> Iterator[Any]:
    opened: list[Visit] = []

    def _open(viewport: dict[str, int] = DESKTOP) -> Visit:
        opened.append(Visit(browser, f"{live_server}/evidence/SURG.00126", viewport))
        return opened[-1]

    yield _open
    for page in opened:
        page.page.close()


def screenshot(visit: Visit, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    visit.page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 20_000
    return path


def test_loads_without_console_errors_and_is_captured(visit):
    page = visit()
    assert page.page.title() == "SURG.00126 Irreversible Electroporation: evidence summary"
    assert page.problems == []
    screenshot(page, "evidence-desktop.png")


def test_studies_table_renders(visit):
    page = visit()
    table = page.page.locator("table.studies")
    assert table.is_visible()
    box = table.bounding_box()
    assert box is not None and box["width"] > 900
    rows = table.locator("tbody tr:not(.group)")
    assert rows.count() == STUDIES
    for index in range(rows.count()):
        row = rows.nth(index)
        assert row.is_visible() and row.bounding_box()["height"] > 20
    groups = [label.strip() for label in table.locator("tr.group th").all_inner_texts()]
    assert [g.split(" · ")[0] for g in groups] == [group.label for group in study_groups(SURG)]
    headers = table.locator("thead th").all_inner_texts()
    assert headers == ["Study", "Design", "Patients treated with IRE", "Main finding", "Main limitation"]


def test_chart_renders_one_bar_per_study_to_scale(visit):
    page = visit()
    chart = page.page.locator("svg.chart")
    assert chart.is_visible()
    groups = study_groups(SURG)
    box = chart.bounding_box()
    assert box is not None and box["height"] == pytest.approx(len(groups) * CHART_HEADING + STUDIES * CHART_ROW + 4)
    bars = page.evaluate(
        """() => [...document.querySelectorAll('svg.chart rect')].map(r => ({
             width: r.getBoundingClientRect().width, n: +r.nextElementSibling.textContent,
             label: r.previousElementSibling.firstChild.textContent.trim()}))"""
    )
    assert len(bars) == STUDIES
    expected = {f"{s.author} {s.year}": s.ire_subjects for s in SURG.evidence.studies}
    assert {bar["label"]: bar["n"] for bar in bars} == expected
    widest = max(bars, key=lambda bar: bar["n"])
    assert widest["width"] == pytest.approx(0.8 * box["width"], abs=1)
    for bar in bars:  # lengths are proportional to the patients treated
        assert bar["width"] == pytest.approx(widest["width"] * bar["n"] / widest["n"], abs=1.5)
    # Counts sit just right of their bars, inside the chart.
    counts = page.evaluate(
        "() => [...document.querySelectorAll('svg.chart text.count')].map(t => t.getBoundingClientRect().right)"
    )
    assert max(counts) <= box["x"] + box["width"]


def test_links_resolve(visit, live_server):
    page = visit()
    anchors = page.evaluate("() => [...document.querySelectorAll('a[href^=\"#\"]')].map(a => a.getAttribute('href'))")
    assert {"#main", "#policy", "#studies", "#codes", "#references"} <= set(anchors)
    missing = page.evaluate(
        "() => [...document.querySelectorAll('a[href^=\"#\"]')].map(a => a.getAttribute('href'))"
        ".filter(h => !document.getElementById(h.slice(1)))"
    )
    assert missing == []
    page.page.get_by_role("link", name="Studies", exact=True).click()
    top = page.evaluate("() => document.getElementById('studies').getBoundingClientRect().top")
    assert -1 <= top < 100  # scrolled to the section (sub-pixel layout may land a fraction above 0)
    assert page.page.url.endswith("#studies")
    page.page.locator('a[href="#ref-41"]').first.click()
    assert page.evaluate("() => document.getElementById('ref-41').getBoundingClientRect().top") < DESKTOP["height"]
    assert page.problems == []
    json_link = page.page.get_by_role("link", name="this page as JSON")
    assert json_link.get_attribute("href") == f"{live_server}/evidence/SURG.00126.json"
    with page.page.expect_navigation() as navigation:
        json_link.click()
    response = navigation.value
    assert response is not None and response.status == 200
    assert response.headers["content-type"].startswith("application/json")
    document = page.evaluate("() => JSON.parse(document.body.innerText)")
    assert document["id"] == "SURG.00126" and len(document["evidence"]["studies"]) == STUDIES


def test_reads_at_phone_width(visit):
    page = visit(PHONE)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    chart = page.page.locator("svg.chart").bounding_box()
    assert chart is not None and chart["width"] <= PHONE["width"]
    assert page.evaluate("() => parseFloat(getComputedStyle(document.querySelector('svg.chart text')).fontSize)") >= 12
    # Studies stack: one block per study, each value under its column's name.
    cell = page.page.locator("table.studies td.finding").first
    assert page.evaluate("() => getComputedStyle(document.querySelector('table.studies td')).display") == "block"
    assert cell.bounding_box()["width"] > 300
    assert (
        page.evaluate("() => getComputedStyle(document.querySelector('table.studies td'), '::before').content")
        == '"Design"'
    )
    assert page.problems == []
    screenshot(page, "evidence-phone.png")


def test_accessibility_basics_and_contrast(visit):
    page = visit()
    assert page.evaluate("() => document.documentElement.lang") == "en"
    levels = page.evaluate("() => [...document.querySelectorAll('h1, h2, h3, h4')].map(h => +h.tagName[1])")
    assert levels.count(1) == 1 and levels[0] == 1
    assert all(b - a <= 1 for a, b in itertools.pairwise(levels)), levels  # no skipped level
    assert page.evaluate("() => [...document.querySelectorAll('table th')].every(th => th.getAttribute('scope'))")
    assert page.page.get_by_role("img", name="Patients treated with IRE in each study, by indication").is_visible()
    failures = [r for r in page.evaluate(CONTRAST_JS) if r["ratio"] < r["needed"]]
    assert failures == []
    page.page.keyboard.press("Tab")  # the first stop is the skip link, and it shows itself
    skip = page.page.locator("a.skip")
    assert page.evaluate("() => document.activeElement.className") == "skip"
    assert skip.bounding_box()["y"] >= 0


def test_prints(visit):
    page = visit()
    page.page.emulate_media(media="print")
    assert page.evaluate("() => getComputedStyle(document.querySelector('nav.toc')).display") == "none"
    assert page.evaluate("() => getComputedStyle(document.querySelector('svg.chart')).display") != "none"
    ARTIFACTS.mkdir(exist_ok=True)
    pdf = page.page.pdf(format="A4", print_background=False)
    assert pdf.startswith(b"%PDF") and len(pdf) > 50_000
    (ARTIFACTS / "evidence.pdf").write_bytes(pdf)
