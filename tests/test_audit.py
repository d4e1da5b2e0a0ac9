"""The audit trail through the HTTP API, on SQLite and on a real PostgreSQL server: what a hook
call records, feedback exactly once and checked against its card, one alert per decision, and no
patient or user id in clear anywhere in the database."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, g
from flask.testing import FlaskClient
from sqlalchemy import String, cast, func, select

from cds_service import create_app
from cds_service.audit import clean, fhir_origin
from cds_service.idhash import IdHasher, IdKind
from cds_service.storage import Store
from cds_service.storage.tables import card_orders, cards, feedback, feedback_suggestions, hook_calls, metadata
from tests.conftest import ROOT, SELECT, SIGN, assert_valid_response, hook_request, service_request

PATIENT = "patient-7c1e4a"
USER = "Practitioner/user-93b2"
IRE = service_request("sr-ire", code="0600T", display="Ablation, irreversible electroporation", text="IRE of liver")
NANO = service_request("sr-nano", system=None, text="NanoKnife ablation of pancreatic tumor")
CT = service_request("sr-ct", code="74177", display="CT abdomen and pelvis with contrast")
KEY = "k" * 40


@pytest.fixture
def make_app(database_url: str) -> Iterator[Callable[..., Flask]]:
    """Apps on the test's database; their queued audit records are written before it is dropped."""
    apps: list[Flask] = []

    def make(**settings: Any) -> Flask:
        config = {"base_url": "https://cds.example.org", "database_url": database_url, "upgrade_db": True}
        app = create_app({**config, "id_hash_key": KEY, **settings})
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        assert app.extensions["cds_store"].flush(10)


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def store(app: Flask) -> Store:
    return app.extensions["cds_store"]


def call(client: FlaskClient, path: str, *orders: dict[str, Any], patient: str = PATIENT, **extra: Any) -> Any:
    hook = "order-select" if path == SELECT else "order-sign"
    body = hook_request(*orders, hook=hook, **extra)
    body["context"]["patientId"] = patient
    body["context"]["userId"] = USER
    if hook == "order-select" and "selections" not in extra:
        body["context"]["selections"] = [f"ServiceRequest/{o['id']}" for o in orders]
    response = client.post(path, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_valid_response(response.json)
    return response.json


def rows(store: Store, table: Any) -> list[dict[str, Any]]:
    assert store.flush(10), "the background writer did not finish"
    with store.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(select(table))]


def post_feedback(client: FlaskClient, *items: dict[str, Any], path: str = SIGN) -> Any:
    return client.post(f"{path}/feedback", json={"feedback": list(items)})


def overridden(card: dict[str, Any], reason: str | None = "clinical-trial", when: str = "2026-11-26T10:00:00Z") -> Any:
    item: dict[str, Any] = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": when}
    if reason:
        system = card["overrideReasons"][0]["system"]
        item["overrideReason"] = {"reason": {"system": system, "code": reason}, "userComment": f"see {PATIENT}"}
    return item


def accepted(card: dict[str, Any], when: str = "2026-11-26T10:00:00Z") -> dict[str, Any]:
    ids = [{"id": s["uuid"]} for s in card["suggestions"]]
    return {"card": card["uuid"], "outcome": "accepted", "acceptedSuggestions": ids, "outcomeTimestamp": when}


class TestHookCallRecord:
    def test_a_card_issuing_call_is_recorded_with_hashed_ids(self, client, store):
        body = call(client, SIGN, IRE, NANO, CT, fhirServer="https://EHR.example.org:8443/fhir/tenant-9")
        (card,) = body["cards"]
        (recorded_call,) = rows(store, hook_calls)
        hasher = IdHasher(KEY.encode(), "test")
        assert recorded_call["service_id"] == "medical-policy-order-sign"
        assert recorded_call["hook"] == "order-sign"
        assert recorded_call["fhir_origin"] == "https://ehr.example.org:8443"
        assert recorded_call["client"] is None
        assert recorded_call["patient_hash"] == hasher.digest(IdKind.PATIENT, PATIENT)
        assert recorded_call["user_hash"] == hasher.digest(IdKind.USER, USER)
        assert recorded_call["called_at"].tzinfo is not None

        (recorded_card,) = rows(store, cards)
        assert recorded_card["uuid"] == card["uuid"]
        assert (recorded_card["policy_id"], recorded_card["policy_version"]) == ("SURG.00126", "2024-04-01")
        assert [r["code"] for r in recorded_card["override_reasons"]] == [r["code"] for r in card["overrideReasons"]]

        orders = sorted(rows(store, card_orders), key=lambda r: r["position"])
        assert [o["order_ref"] for o in orders] == ["ServiceRequest/sr-ire", "ServiceRequest/sr-nano"]
        assert [o["suggestion_uuid"] for o in orders] == [s["uuid"] for s in card["suggestions"]]
        assert {"kind": "code", "system": "CPT", "code": "0600T", "field": "code.coding[0]"} in orders[0]["reasons"]
        assert {"kind": "text", "phrase": "NanoKnife", "field": "code.text"} in orders[1]["reasons"]

    def test_a_call_without_cards_is_not_recorded(self, client, store):
        assert call(client, SIGN, CT)["cards"] == []
        assert rows(store, hook_calls) == []

    def test_the_calling_client_is_the_authenticated_iss(self, app, client, store):
        @app.before_request
        def _authenticated() -> None:
            g.auth_client = "https://sandbox.cds-hooks.org"

        call(client, SIGN, IRE)
        assert rows(store, hook_calls)[0]["client"] == "https://sandbox.cds-hooks.org"

    def test_hostile_text_is_stored_safely(self, client, store):
        odd = dict(IRE, id="sr-\x00-\ud800")  # not a valid FHIR id; examined all the same
        response = client.post(SIGN, json=hook_request(odd, hookInstance="hook-\x00-" + "x" * 1000))
        assert len(response.json["cards"]) == 1
        (recorded,) = rows(store, hook_calls)
        assert recorded["hook_instance"].startswith("hook-\ufffd-x")
        assert len(recorded["hook_instance"]) == 255
        assert rows(store, card_orders)[0]["order_ref"] == "ServiceRequest/sr-\ufffd-?"


class TestFeedback:
    def test_feedback_is_stored_once_however_often_it_is_sent(self, client, store):
        card = call(client, SIGN, IRE)["cards"][0]
        item = overridden(card)
        same_instant = dict(item, outcomeTimestamp="2026-11-26T11:00:00+01:00")
        for body in (item, item, same_instant):
            response = post_feedback(client, body)
            assert (response.status_code, response.json) == (200, {"received": 1})
        (row,) = rows(store, feedback)
        assert row["card_uuid"] == card["uuid"]
        assert row["outcome"] == "overridden"
        assert row["card_known"] is True
        assert (row["reason_code"], row["has_comment"]) == ("clinical-trial", True)
        assert row["outcome_at"].isoformat() == "2026-11-26T10:00:00+00:00"

    def test_another_outcome_or_time_is_another_row(self, client, store):
        card = call(client, SIGN, IRE)["cards"][0]
        response = post_feedback(
            client, overridden(card), overridden(card, "patient-informed", "2026-11-26T10:05:00Z"), accepted(card)
        )
        assert response.json == {"received": 3}
        assert len(rows(store, feedback)) == 3
        assert [r["suggestion_uuid"] for r in rows(store, feedback_suggestions)] == [card["suggestions"][0]["uuid"]]

    def test_feedback_for_a_card_never_issued_is_received_and_recorded_as_such(self, client, store):
        item = {
            "card": "9368d37b-283f-44a0-93ea-547cebab93ed",
            "outcome": "overridden",
            "outcomeTimestamp": "2026-11-26T10:00:00Z",
        }
        item["overrideReason"] = {"reason": {"system": "urn:other", "code": "anything"}}
        assert post_feedback(client, item).json == {"received": 1}
        (row,) = rows(store, feedback)
        assert row["card_known"] is False
        assert row["reason_code"] == "anything"

    def test_a_card_from_the_other_service_is_not_this_services_card(self, client, store):
        card = call(client, SELECT, IRE)["cards"][0]
        assert post_feedback(client, overridden(card), path=SIGN).json == {"received": 1}
        assert rows(store, feedback)[0]["card_known"] is False

    def test_an_override_reason_the_card_did_not_offer_is_a_400_naming_the_field(self, client, store):
        card = call(client, SIGN, IRE)["cards"][0]
        response = post_feedback(client, overridden(card), overridden(card, "because", "2026-11-26T10:01:00Z"))
        assert response.status_code == 400
        issue = response.json["issue"][0]
        assert issue["expression"] == ["feedback[1].overrideReason.reason"]
        assert "'because'" in issue["diagnostics"]
        assert "clinical-trial" in issue["diagnostics"]
        assert rows(store, feedback) == []  # nothing of a rejected request is stored

    def test_a_suggestion_the_card_did_not_offer_is_a_400_naming_the_field(self, client):
        card = call(client, SIGN, IRE)["cards"][0]
        item = accepted(card)
        item["acceptedSuggestions"].append({"id": "not-a-suggestion"})
        response = post_feedback(client, item)
        assert response.status_code == 400
        assert response.json["issue"][0]["expression"] == ["feedback[0].acceptedSuggestions[1].id"]

    @pytest.mark.parametrize(
        ("item", "field"),
        [
            ({"card": "x" * 129, "outcome": "overridden"}, "feedback[0].card"),
            (
                {"card": "c", "outcome": "accepted", "acceptedSuggestions": [{"id": ""}]},
                "feedback[0].acceptedSuggestions[0].id",
            ),
            ({"card": "c", "outcome": "overridden", "overrideReason": {}}, "feedback[0].overrideReason"),
            (
                {"card": "c", "outcome": "overridden", "overrideReason": {"reason": {"system": "s"}}},
                "feedback[0].overrideReason.reason.code",
            ),
        ],
    )
    def test_malformed_feedback_is_a_400_naming_the_field(self, client, item, field):
        response = post_feedback(client, dict(item, outcomeTimestamp="2026-11-26T10:00:00Z"))
        assert response.status_code == 400
        assert response.json["issue"][0]["expression"] == [field]


class TestOneAlertPerDecision:
    def test_order_sign_does_not_repeat_what_order_select_showed(self, client, store):
        assert len(call(client, SELECT, IRE)["cards"]) == 1
        assert store.flush(10)
        assert call(client, SIGN, IRE, CT)["cards"] == []

    def test_only_the_new_order_is_shown_at_sign(self, client, store):
        call(client, SELECT, IRE)
        assert store.flush(10)
        (card,) = call(client, SIGN, IRE, NANO)["cards"]
        assert [s["actions"][0]["resourceId"] for s in card["suggestions"]] == ["ServiceRequest/sr-nano"]
        assert "NanoKnife" in card["detail"] and "sr-ire" not in card["detail"]

    @pytest.mark.parametrize(
        "change",
        [
            pytest.param(
                lambda o, p: (
                    dict(o, code={"coding": [{"system": o["code"]["coding"][0]["system"], "code": "0601T"}]}),
                    p,
                ),
                id="other-code",
            ),
            pytest.param(lambda o, p: (dict(o, id="sr-other"), p), id="other-order"),
            pytest.param(lambda o, p: (o, "another-patient"), id="other-patient"),
        ],
    )
    def test_a_changed_decision_is_shown_again(self, client, store, change: Callable[..., Any]):
        call(client, SELECT, IRE)
        assert store.flush(10)
        order, patient = change(copy.deepcopy(IRE), PATIENT)
        assert len(call(client, SIGN, order, patient=patient)["cards"]) == 1

    def test_a_new_policy_version_is_a_new_decision(self, make_app, client, store, tmp_path):
        call(client, SELECT, IRE)
        assert store.flush(10)
        revised = tmp_path / "policies"
        revised.mkdir()
        text = (ROOT / "policies" / "SURG.00126.yaml").read_text()
        (revised / "SURG.00126.yaml").write_text(text.replace('version: "2024-04-01"', 'version: "2026-01-01"', 1))
        after_revision = make_app(policies_dir=str(revised))
        (card,) = call(after_revision.test_client(), SIGN, IRE)["cards"]
        assert "version 2026-01-01" in card["detail"]

    def test_order_sign_can_be_configured_to_repeat(self, make_app):
        app = make_app(repeat_on_sign=True)
        client = app.test_client()
        call(client, SELECT, IRE)
        app.extensions["cds_store"].flush(10)
        assert len(call(client, SIGN, IRE)["cards"]) == 1

    def test_no_crd_system_action_is_repeated_either(self, make_app):
        app = make_app(crd_coverage_info=True)
        client = app.test_client()
        first = call(client, SELECT, IRE)
        assert [a["resource"]["id"] for a in first["systemActions"]] == ["sr-ire"]
        app.extensions["cds_store"].flush(10)
        again = call(client, SIGN, IRE, NANO)
        assert [a["resource"]["id"] for a in again["systemActions"]] == ["sr-nano"]

    def test_order_select_itself_always_shows_the_card(self, client, store):
        call(client, SELECT, IRE)
        assert store.flush(10)
        assert len(call(client, SELECT, IRE)["cards"]) == 1


def test_no_patient_or_user_id_in_clear_anywhere_in_the_database(client, store):
    for patient in (PATIENT, "pat-2b9f01"):
        call(client, SELECT, IRE, patient=patient)
        card = call(client, SIGN, NANO, patient=patient)["cards"][0]
        assert post_feedback(client, overridden(card), accepted(card)).json == {"received": 2}
    secrets = (PATIENT, "pat-2b9f01", "user-93b2")
    assert store.flush(10)
    with store.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(hook_calls)) == 4
        assert connection.scalar(select(func.count()).select_from(feedback)) == 4
        for table in metadata.sorted_tables:
            for column in table.columns:
                text = func.lower(cast(column, String))
                for secret in secrets:
                    found = connection.scalar(select(func.count()).where(text.contains(secret.lower())))
                    assert found == 0, f"{secret} in {table.name}.{column.name}"


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://ehr.example.org/fhir/r4", "https://ehr.example.org"),
        ("http://user:pw@10.0.0.1:8080/fhir", "http://10.0.0.1:8080"),
        ("https://[2001:db8::1]/fhir", "https://[2001:db8::1]"),
        ("not a url", None),
        ("https://host:99999/", None),
        (None, None),
    ],
)
def test_fhir_origin(url, origin):
    assert fhir_origin(url) == origin


def test_clean_keeps_text_storable():
    assert clean("a\x00b\ud800c") == "a\ufffdb?c"
    assert clean("x" * 300) == "x" * 255


def test_the_id_hash_key_is_generated_once_and_kept_private(data_dir: Path):
    from cds_service.config import Settings  # noqa: PLC0415

    first = IdHasher.from_settings(Settings(data_dir=data_dir))
    second = IdHasher.from_settings(Settings(data_dir=data_dir))
    key_file = data_dir / "id-hash.key"
    assert first.source == str(key_file)
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert first.digest(IdKind.PATIENT, "p") == second.digest(IdKind.PATIENT, "p")
    assert first.digest(IdKind.PATIENT, "p") != first.digest(IdKind.USER, "p")
    configured = IdHasher.from_settings(Settings(data_dir=data_dir, id_hash_key=KEY))
    assert configured.source == "CDS_ID_HASH_KEY"
    assert configured.digest(IdKind.PATIENT, "p") != first.digest(IdKind.PATIENT, "p")
