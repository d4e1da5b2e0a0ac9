"""The bundled examples: each request gets exactly its recorded response, and they cover what they claim."""

from __future__ import annotations

import pytest

from cds_service import create_app
from cds_service.cardrules import response_problems
from cds_service.examples import RECORDED_BASE_URL, UUID_PLACEHOLDER, comparable, load_examples
from tests.conftest import assert_valid_response

EXAMPLES = load_examples()


@pytest.fixture(scope="module")
def recording_client():
    """The app as `cds-service serve` runs it with its defaults, which is how the responses were recorded."""
    return create_app({"base_url": RECORDED_BASE_URL, "payer_name": "Health plan"}).test_client()


def test_examples_cover_both_hooks_ire_and_not():
    kinds = {(e.request["hook"], bool(e.response["cards"])) for e in EXAMPLES}
    assert kinds == {("order-select", True), ("order-select", False), ("order-sign", True), ("order-sign", False)}
    several = [e for e in EXAMPLES if len(e.response["cards"][0]["suggestions"] if e.response["cards"] else []) > 1]
    assert several, "one example has several IRE orders in one card"
    assert any("type" not in e.request["context"]["draftOrders"] for e in EXAMPLES), "a sandbox-style request"
    assert any("fhirAuthorization" in e.request and "prefetch" in e.request for e in EXAMPLES), "a CRD-style request"
    assert "order-sign-ire" in {e.name for e in EXAMPLES}  # the README's example


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_example_gets_its_recorded_response(recording_client, example):
    response = recording_client.post(f"/cds-services/{example.service.id}", json=example.request)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_valid_response(response.json)
    assert comparable(response.json, RECORDED_BASE_URL) == comparable(example.response, RECORDED_BASE_URL)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_recorded_response_follows_the_card_rules(example):
    assert_valid_response(example.response)
    assert response_problems(example.response) == []


def test_comparison_ignores_only_uuids_and_the_base_url():
    (recorded,) = [e.response for e in EXAMPLES if e.name == "order-sign-ire"]
    card = recorded["cards"][0]
    moved = {
        **recorded,
        "cards": [
            {
                **card,
                "uuid": "another",
                "links": [
                    {**link, "url": link["url"].replace(RECORDED_BASE_URL, "https://cds.example.org")}
                    for link in card["links"]
                ],
            }
        ],
    }
    assert comparable(moved, "https://cds.example.org")["cards"][0]["uuid"] == UUID_PLACEHOLDER
    assert comparable(moved, "https://cds.example.org") == comparable(recorded, RECORDED_BASE_URL)
    reworded = {**recorded, "cards": [{**card, "summary": card["summary"] + "!"}]}
    assert comparable(reworded, RECORDED_BASE_URL) != comparable(recorded, RECORDED_BASE_URL)
