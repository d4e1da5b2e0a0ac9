"""The benchmark's inputs stay valid: bench/ payloads are real hook requests the service answers.

The load test itself (bench/run) is not part of the suite; this keeps what it sends from rotting.
"""

from __future__ import annotations

import json

import pytest

from bench.baseline import create_baseline_app
from bench.openloop import freshen, percentile
from bench.payloads import all_payloads, write_payloads
from cds_service.fhircheck import fhir_problems
from tests.conftest import assert_valid_response

PAYLOADS = all_payloads()


def test_the_set_the_benchmark_promises():
    assert [(p.name, p.orders, p.ire) for p in PAYLOADS] == [
        ("sign-1", 1, False),
        ("sign-1-ire", 1, True),
        ("sign-10", 10, False),
        ("sign-10-ire", 10, True),
        ("sign-100", 100, False),
        ("sign-100-ire", 100, True),
        ("select-10-ire", 10, True),
    ]


def test_payloads_are_deterministic(tmp_path):
    first, second = write_payloads(tmp_path / "a"), write_payloads(tmp_path / "b")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert len({p.body["hookInstance"] for p in PAYLOADS}) == len(PAYLOADS)


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.name)
def test_orders_are_realistic_valid_fhir(payload):
    entries = payload.body["context"]["draftOrders"]["entry"]
    assert len(entries) == payload.orders
    for entry in entries:
        order = entry["resource"]
        assert fhir_problems(order) is None
        for element in ("identifier", "subject", "requester", "reasonCode", "occurrenceDateTime", "note"):
            assert order[element], element


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.name)
def test_the_service_answers_each_payload(client, caplog, payload):
    caplog.set_level("WARNING")
    response = client.post(payload.path, data=payload.encoded(), content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_valid_response(response.json)
    cards = response.json["cards"]
    assert len(cards) == int(payload.ire)
    if payload.ire:
        (suggestion,) = cards[0]["suggestions"]
        ire_order = payload.body["context"]["draftOrders"]["entry"][payload.orders // 2]["resource"]
        assert suggestion["actions"][0]["resourceId"] == f"ServiceRequest/{ire_order['id']}"
    assert "not valid FHIR" not in caplog.text


def test_fresh_orders_are_new_content_the_service_still_answers(client):
    payload = next(p for p in PAYLOADS if p.name == "sign-10-ire")
    fresh = freshen(payload.encoded(), "42-7")
    assert fresh.count(b'-42-7"') == payload.orders
    response = client.post(payload.path, data=fresh, content_type="application/json")
    assert response.status_code == 200 and len(response.json["cards"]) == 1


def test_the_baseline_returns_the_recorded_response_for_the_payload(client):
    payload = PAYLOADS[1]
    recorded = client.post(payload.path, data=payload.encoded(), content_type="application/json").get_data()
    baseline = create_baseline_app({payload.name: recorded}).test_client()
    response = baseline.post(f"/fixed/{payload.name}", data=payload.encoded(), content_type="application/json")
    assert response.status_code == 200 and response.get_data() == recorded
    assert json.loads(response.get_data())["cards"]
    assert baseline.post("/fixed/unknown", data=b"{}").status_code == 404


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99), percentile(values, 1.0)) == (50.0, 99.0, 100.0)
    assert percentile([7.0], 0.99) == 7.0
