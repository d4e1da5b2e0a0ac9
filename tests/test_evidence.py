"""The evidence summary page and its JSON twin."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from cds_service import create_app
from tests.test_matching import SURG


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture
def page(client):
    response = client.get("/evidence/SURG.00126")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    parser = _Page()
    parser.feed(response.get_data(as_text=True))
    parser.response = response
    parser.plain = " ".join(" ".join(parser.text).split())
    return parser


def test_page_structure_and_accessibility(page):
    tags = [t for t, _ in page.tags]
    assert ("html", {"lang": "en"}) in page.tags
    assert tags.count("h1") == 1
    headings = [re.sub(r"\s+", " ", h) for h in ("Position", "Studies", "Codes", "References", "Review history")]
    for heading in headings:
        assert heading in page.plain
    assert "script" not in tags  # readable with no JavaScript
    assert any(t == "th" and a.get("scope") == "col" for t, a in page.tags)
    assert "svg" in tags and "title" in tags


def test_page_shows_every_study_code_and_reference(page):
    for study in SURG.evidence.studies:
        assert f"{study.author} {study.year}" in page.plain
        assert str(study.subjects) in page.plain
    for code in SURG.codes:
        assert code.code in page.plain
    for reference in SURG.evidence.references:
        assert ("ref-" + reference.id) in {a.get("id") for _, a in page.tags if a.get("id")}
    for guideline in SURG.evidence.guidelines:
        assert guideline.version in page.plain
    assert "investigational and not medically necessary" in page.plain.lower()
    assert "2006-11-21" in page.plain  # FDA clearance
    assert "MPTAC" in page.plain or "committee" in page.plain.lower()


def test_page_security_headers(page):
    headers = page.response.headers
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"


def test_page_links_are_absolute_from_base_url(page):
    hrefs = [
        a["href"]
        for t, a in page.tags
        if t in ("a", "link") and a.get("href") and not a["href"].startswith(("#", "data:"))  # data: the inline icon
    ]
    assert hrefs and all(h.startswith("https://cds.example.org/evidence/SURG.00126") for h in hrefs)


def test_json_has_the_same_content(client, page):
    data = client.get("/evidence/SURG.00126.json").json
    assert data["id"] == "SURG.00126"
    assert data["position"] == "investigational"
    assert len(data["evidence"]["studies"]) == len(SURG.evidence.studies)
    assert len(data["codes"]) == 16
    assert {c["system_uri"] for c in data["codes"]} == {
        "http://www.ama-assn.org/go/cpt",
        "http://www.cms.gov/Medicare/Coding/ICD10",
    }
    totals = data["evidence"]["totals"]
    assert totals["studies"] == len(SURG.evidence.studies)
    assert totals["largest_study_ire_subjects"] == max(s.ire_subjects for s in SURG.evidence.studies)
    assert str(totals["subjects_treated_with_ire"]) in page.plain
    assert data["urls"] == {
        "html": "https://cds.example.org/evidence/SURG.00126",
        "json": "https://cds.example.org/evidence/SURG.00126.json",
    }
    assert "card" not in data


def test_card_evidence_link_opens_the_page(client):
    from tests.conftest import SIGN, hook_request, service_request  # noqa: PLC0415

    card = client.post(SIGN, json=hook_request(service_request(code="0600T"))).json["cards"][0]
    for link in card["links"]:
        path = link["url"].removeprefix("https://cds.example.org").split("#")[0]
        assert client.get(path).status_code == 200


def test_page_urls_follow_the_request_host():
    client = create_app({}).test_client()
    data = client.get("/evidence/SURG.00126.json", base_url="http://10.0.0.5:9000").json
    assert data["urls"]["html"] == "http://10.0.0.5:9000/evidence/SURG.00126"


def test_randomized_trials_show_what_they_compared(client):
    html = client.get("/evidence/SURG.00126").get_data(as_text=True)
    (rct,) = [s for s in SURG.evidence.studies if s.design_category.value == "rct"]
    assert rct.comparator and f"{rct.author} {rct.year} compared with: {rct.comparator}" in html
    data = client.get("/evidence/SURG.00126.json").json
    assert {s["author"]: s["comparator"] for s in data["evidence"]["studies"]}[rct.author] == rct.comparator
