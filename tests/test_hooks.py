"""Discovery and hook calls through the Flask app: cards, scope of each hook, sloppy clients."""

from __future__ import annotations

import json
import uuid

import pytest

from cds_service import create_app
from tests.conftest import CPT, ROOT, SELECT, SIGN, assert_valid_response, hook_request, service_request

IRE = service_request(
    "sr-ire", code="0600T", display="Ablation, irreversible electroporation", text="IRE of liver tumor"
)
CT = service_request("sr-ct", code="74177", display="CT abdomen and pelvis with contrast")
NANO = service_request("sr-nano", system=None, text="NanoKnife ablation of pancreatic tumor")


def test_discovery_lists_one_service_per_hook(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = response.json["services"]
    assert [(s["id"], s["hook"]) for s in services] == [
        ("medical-policy-order-select", "order-select"),
        ("medical-policy-order-sign", "order-sign"),
    ]
    for service in services:
        assert service["title"] and service["description"]
        # CDS Hooks 2.0 "Prefetch Template": the patient and their active coverage, by context token.
        assert service["prefetch"] == {
            "patient": "Patient/{{context.patientId}}",
            "coverage": "Coverage?patient={{context.patientId}}&status=active",
        }
        assert set(service) <= {"id", "hook", "title", "description", "prefetch", "usageRequirements"}


def test_order_sign_ire_card(post_hook):
    body = post_hook(SIGN, hook_request(CT, IRE))
    (card,) = body["cards"]
    assert card["indicator"] == "warning"
    assert "investigational" in card["summary"] and "Irreversible Electroporation" in card["summary"]
    assert len(card["summary"]) < 140
    assert uuid.UUID(card["uuid"])
    assert card["source"]["label"] == "Health plan medical policy SURG.00126: Irreversible Electroporation"
    assert card["source"]["topic"]["code"] == "coverage-info"
    assert card["source"]["url"] == "https://cds.example.org/evidence/SURG.00126#policy"
    assert [link["url"] for link in card["links"]] == [
        "https://cds.example.org/evidence/SURG.00126",
        "https://cds.example.org/evidence/SURG.00126#policy",
    ]
    assert all(link["type"] == "absolute" for link in card["links"])
    # Detail: the position, the order and why it matched, coverage, the evidence.
    detail = card["detail"]
    assert "investigational and not medically necessary" in detail
    assert "`ServiceRequest/sr-ire`" in detail
    assert "CPT 0600T" in detail and "the text 'IRE' in `code.text`" in detail
    assert "coverage" in detail.lower() and "Strength of the evidence" in detail
    assert "sr-ct" not in detail
    # One suggestion that deletes the IRE order, and the selectionBehavior the spec requires.
    assert card["selectionBehavior"] == "any"
    (suggestion,) = card["suggestions"]
    assert suggestion["actions"] == [
        {
            "type": "delete",
            "description": suggestion["actions"][0]["description"],
            "resourceId": "ServiceRequest/sr-ire",
        }
    ]
    description = suggestion["actions"][0]["description"]
    assert "ServiceRequest/sr-ire" in description and "SURG.00126" in description
    assert uuid.UUID(suggestion["uuid"])
    reasons = card["overrideReasons"]
    assert {r["code"] for r in reasons} == {
        "clinical-trial",
        "coverage-exception",
        "patient-informed",
        "not-ire",
    }
    assert all(r["display"] and r["system"] for r in reasons)


def test_no_ire_no_cards(post_hook):
    assert post_hook(SIGN, hook_request(CT)) == {"cards": []}
    assert post_hook(SELECT, hook_request(CT, hook="order-select", selections=["ServiceRequest/sr-ct"])) == {
        "cards": []
    }


def test_several_ire_orders_give_one_card_with_a_suggestion_each(post_hook):
    body = post_hook(SIGN, hook_request(IRE, CT, NANO))
    (card,) = body["cards"]
    assert [s["actions"][0]["resourceId"] for s in card["suggestions"]] == [
        "ServiceRequest/sr-ire",
        "ServiceRequest/sr-nano",
    ]
    assert "These orders fall under the policy" in card["detail"]
    assert len({s["uuid"] for s in card["suggestions"]}) == 2


def test_every_call_issues_fresh_card_uuids(post_hook):
    first = post_hook(SIGN, hook_request(IRE))["cards"][0]
    second = post_hook(SIGN, hook_request(IRE))["cards"][0]
    assert first["uuid"] != second["uuid"]
    assert first["suggestions"][0]["uuid"] != second["suggestions"][0]["uuid"]


def test_order_select_evaluates_only_the_selections(post_hook):
    body = hook_request(IRE, CT, hook="order-select", selections=["ServiceRequest/sr-ct"])
    assert post_hook(SELECT, body) == {"cards": []}
    body = hook_request(IRE, CT, NANO, hook="order-select", selections=["ServiceRequest/sr-nano"])
    (card,) = post_hook(SELECT, body)["cards"]
    assert [s["actions"][0]["resourceId"] for s in card["suggestions"]] == ["ServiceRequest/sr-nano"]


def test_order_select_accepts_absolute_selection_references(post_hook):
    body = hook_request(IRE, hook="order-select", selections=["https://ehr.example.org/fhir/ServiceRequest/sr-ire"])
    assert len(post_hook(SELECT, body)["cards"]) == 1


def test_selection_missing_from_draft_orders_is_not_an_error(post_hook):
    body = hook_request(IRE, hook="order-select", selections=["ServiceRequest/not-there"])
    assert post_hook(SELECT, body) == {"cards": []}


def test_order_sign_evaluates_every_draft_whatever_its_status(post_hook):
    revised = dict(IRE, status="active")  # order-sign 1.1.0: re-signed orders are not drafts
    body = hook_request(CT, revised, selections=["ServiceRequest/sr-ct"])  # selections mean nothing here
    assert len(post_hook(SIGN, body)["cards"]) == 1


@pytest.mark.parametrize(("path", "wrong_hook"), [(SIGN, "order-select"), (SELECT, "order-sign")])
def test_the_service_hook_decides_not_the_request(post_hook, path, wrong_hook, caplog):
    body = hook_request(IRE, CT, hook=wrong_hook, selections=["ServiceRequest/sr-ire"])
    caplog.set_level("INFO")
    assert len(post_hook(path, body)["cards"]) == 1
    # The request line names both: the hook the request claims and the service that answered.
    (line,) = [r for r in caplog.records if r.name == "cds_service.request"]
    assert line.hook == wrong_hook and line.service == path.rsplit("/", 1)[1]


def test_other_resource_types_are_not_examined(post_hook):
    med = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/pat-1"},
        "medicationCodeableConcept": {"text": "Irreversible electroporation"},
    }
    assert post_hook(SIGN, hook_request(med)) == {"cards": []}


def test_invalid_fhir_is_still_examined_and_logged_without_patient_data(post_hook, caplog):
    broken = service_request("sr-bad", code="0601T", text="Open IRE of liver tumor")
    broken["authoredOn"] = "last tuesday"
    broken["subject"] = {"reference": "Patient/SECRET-MRN-123", "display": "Jane Q Patient"}
    body = hook_request(broken)
    caplog.set_level("INFO")
    (card,) = post_hook(SIGN, body)["cards"]
    assert card["suggestions"][0]["actions"][0]["resourceId"] == "ServiceRequest/sr-bad"
    assert body["hookInstance"] in caplog.text and "not valid FHIR R4" in caplog.text and "authoredOn" in caplog.text
    assert "SECRET-MRN-123" not in caplog.text and "Jane Q Patient" not in caplog.text


def test_sloppy_but_acceptable_envelopes(post_hook):
    body = hook_request(IRE)
    del body["context"]["draftOrders"]["type"]  # the sandbox sends no Bundle.type
    body["context"]["draftOrders"]["entry"].extend([{}, {"fullUrl": "urn:uuid:1"}, {"resource": None}])
    body["context"]["unknownField"] = {"a": 1}  # CRD hook-23: ignore unrecognised context
    body["extension"] = {"com.example.flag": True}
    del body["fhirServer"]
    assert len(post_hook(SIGN, body)["cards"]) == 1


def test_order_without_id_gets_a_card_without_a_suggestion(post_hook):
    anonymous = service_request(code="0600T")
    del anonymous["id"]
    (card,) = post_hook(SIGN, hook_request(anonymous))["cards"]
    assert "suggestions" not in card and "selectionBehavior" not in card


def test_ehr_text_is_escaped_in_markdown_and_html(post_hook):
    hostile = service_request(
        "sr-x",
        system=None,
        text="NanoKnife <img src=x onerror=alert(1)> [click](javascript:alert(1)) **bold**\n# head",
    )
    (card,) = post_hook(SIGN, hook_request(hostile))["cards"]
    detail = card["detail"]
    assert "<img" not in detail and "&lt;img" in detail
    assert "[click](javascript" not in detail and r"\[click\]\(javascript" in detail
    assert "**bold**" not in detail
    assert "\n# head" not in detail
    # Labels are plain text: no escaping noise there.
    assert card["suggestions"][0]["label"].startswith("Remove the order: NanoKnife <img")


def test_links_follow_the_request_host_without_base_url():
    app = create_app({})
    body = app.test_client().post(SIGN, json=hook_request(IRE), base_url="http://cds.internal:8080").json
    assert body["cards"][0]["links"][0]["url"] == "http://cds.internal:8080/evidence/SURG.00126"


def test_payer_name_is_configurable():
    app = create_app({"payer_name": "Acme Health"})
    card = app.test_client().post(SIGN, json=hook_request(IRE)).json["cards"][0]
    assert card["source"]["label"].startswith("Acme Health medical policy SURG.00126")


def test_readme_example_request(post_hook):
    example = json.loads((ROOT / "examples" / "order-sign-ire.json").read_text())
    (card,) = post_hook(SIGN, example)["cards"]
    assert [s["actions"][0]["resourceId"] for s in card["suggestions"]] == ["ServiceRequest/sr-ire-pancreas"]


def test_response_never_carries_nulls_or_empty_values(post_hook):
    body = post_hook(SIGN, hook_request(IRE, NANO))

    def walk(value, path="$"):
        assert value is not None, path
        if isinstance(value, str):
            assert value.strip(), path
        elif isinstance(value, list):
            assert value or path == "$.cards", path
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")
        elif isinstance(value, dict):
            assert value, path
            for key, item in value.items():
                walk(item, f"{path}.{key}")

    walk(body)


class TestCors:
    ORIGIN = "https://sandbox.cds-hooks.org"

    @pytest.mark.parametrize("path", ["/cds-services", SIGN, f"{SIGN}/feedback"])
    def test_preflight_names_authorization_and_content_type(self, client, path):
        response = client.options(
            path,
            headers={
                "Origin": self.ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] in ("*", self.ORIGIN)
        allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type"} <= allowed
        assert "*" not in allowed
        methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
        assert {"GET", "POST", "OPTIONS"} <= methods

    def test_actual_responses_carry_allow_origin(self, client):
        headers = {"Origin": self.ORIGIN}
        assert client.get("/cds-services", headers=headers).headers["Access-Control-Allow-Origin"]
        response = client.post(SIGN, json=hook_request(IRE), headers=headers)
        assert response.headers["Access-Control-Allow-Origin"]
        error = client.post(SIGN, data="{", headers=headers)
        assert error.status_code == 400 and error.headers["Access-Control-Allow-Origin"]

    def test_allowed_origins_are_configurable(self):
        client = create_app({"cors_origins": "https://ehr.example.org"}).test_client()
        ok = client.get("/cds-services", headers={"Origin": "https://ehr.example.org"})
        assert ok.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"
        other = client.get("/cds-services", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers
        assert "Origin" in ok.headers["Vary"] and "Origin" in other.headers["Vary"]

    def test_preflight_is_answered_before_authentication(self, tmp_path):
        clients = tmp_path / "clients.yaml"
        clients.write_text("clients: [{iss: https://ehr.example.org, jwks_url: https://ehr.example.org/jwks}]")
        client = create_app({"trusted_clients": clients}).test_client()
        response = client.options(SIGN, headers={"Origin": self.ORIGIN, "Access-Control-Request-Method": "POST"})
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert client.post(SIGN, json=hook_request(IRE), headers={"Origin": self.ORIGIN}).status_code == 401


def test_feedback_accepts_the_spec_examples(client):
    body = {
        "feedback": [
            {
                "card": "9368d37b-283f-44a0-93ea-547cebab93ed",
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
                "outcomeTimestamp": "2020-12-11T00:00:00Z",
            },
            {
                "card": "f8b9b3b2-7f2b-4b3a-8b3e-3b3b3b3b3b3b",
                "outcome": "overridden",
                "overrideReason": {
                    "reason": {
                        "code": "clinical-trial",
                        "system": "urn:cds-service:CodeSystem:override-reason",
                    },
                    "userComment": "Enrolled in NCT00000000",
                },
                "outcomeTimestamp": "1985-04-12T23:20:50.52Z",
            },
            {"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-25T00:15:24.829+01:00"},
        ]
    }
    response = client.post(f"{SIGN}/feedback", json=body)
    assert response.status_code == 200
    assert response.json == {"received": 3}


def test_cpt_oid_system_in_a_full_call(post_hook):
    order = service_request("sr-oid", system="urn:oid:2.16.840.1.113883.6.12", code="0601t")
    assert len(post_hook(SIGN, hook_request(order))["cards"]) == 1


def test_cards_validate_against_schema_for_every_policy_code(post_hook):
    from tests.test_matching import SURG  # noqa: PLC0415

    for rule in SURG.codes:
        system = CPT if rule.system.value == "cpt" else "http://www.cms.gov/Medicare/Coding/ICD10"
        order = service_request(f"sr-{rule.code}", system=system, code=rule.code, text="IRE ablation")
        body = post_hook(SIGN, hook_request(order))
        assert_valid_response(body)
        assert len(body["cards"]) == 1
