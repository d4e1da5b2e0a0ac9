"""Every way a client can get it wrong: a JSON OperationOutcome with the right status, never a 500."""

from __future__ import annotations

import json

import pytest

from cds_service import create_app
from tests.conftest import SELECT, SIGN, hook_request, service_request

IRE = service_request("sr-ire", code="0600T")


def _edited(path: str, edit) -> dict:
    """A valid request with ``edit(parent, key)`` applied at the dotted ``path``."""
    body = hook_request(IRE, selections=["ServiceRequest/sr-ire"])
    *parents, last = path.split(".")
    target = body
    for key in parents:
        target = target[key]
    edit(target, last)
    return body


def without(path: str) -> dict:
    return _edited(path, lambda parent, key: parent.pop(key))


def replaced(path: str, value: object) -> dict:
    return _edited(path, lambda parent, key: parent.__setitem__(key, value))


BAD_BODIES = [
    # (id, path, raw body, expected field or None, words in the message)
    ("malformed-json", SIGN, '{"hook": "order-sign",', None, "malformed JSON"),
    ("empty-body", SIGN, "", None, "empty"),
    ("not-utf8", SIGN, b'{"hook": "\xff\xfe"}', None, "UTF-8"),
    ("array", SIGN, "[1, 2]", None, "JSON object"),
    ("string", SIGN, '"order-sign"', None, "JSON object"),
    ("null", SIGN, "null", None, "JSON object"),
    ("missing-hook", SIGN, without("hook"), "hook", "required"),
    ("missing-hookInstance", SIGN, without("hookInstance"), "hookInstance", "required"),
    ("missing-context", SIGN, without("context"), "context", "required"),
    ("missing-draftOrders", SIGN, without("context.draftOrders"), "context.draftOrders", "required"),
    ("missing-patientId", SIGN, without("context.patientId"), "context.patientId", "required"),
    ("missing-userId", SIGN, without("context.userId"), "context.userId", "required"),
    ("missing-selections", SELECT, without("context.selections"), "context.selections", "required"),
    ("unknown-hook", SIGN, replaced("hook", "patient-view"), "hook", "order-select"),
    ("hook-not-string", SIGN, replaced("hook", 7), "hook", "order-select"),
    ("empty-hookInstance", SIGN, replaced("hookInstance", ""), "hookInstance", "at least 1"),
    ("context-not-object", SIGN, replaced("context", []), "context", "dictionary"),
    ("draftOrders-array", SIGN, replaced("context.draftOrders", []), "context.draftOrders", "dictionary"),
    ("draftOrders-string", SIGN, replaced("context.draftOrders", "Bundle"), "context.draftOrders", "dictionary"),
    (
        "draftOrders-not-bundle",
        SIGN,
        replaced("context.draftOrders", {"resourceType": "ServiceRequest", "id": "x"}),
        "context.draftOrders.resourceType",
        "Bundle",
    ),
    (
        "draftOrders-no-resourceType",
        SIGN,
        replaced("context.draftOrders", {"entry": []}),
        "context.draftOrders.resourceType",
        "required",
    ),
    (
        "entry-not-array",
        SIGN,
        replaced("context.draftOrders", {"resourceType": "Bundle", "entry": {"resource": {}}}),
        "context.draftOrders.entry",
        "list",
    ),
    (
        "entry-item-not-object",
        SIGN,
        replaced("context.draftOrders", {"resourceType": "Bundle", "entry": ["x"]}),
        "context.draftOrders.entry[0]",
        "valid dictionary",
    ),
    ("selections-not-array", SELECT, replaced("context.selections", "ServiceRequest/x"), "context.selections", "list"),
    ("selections-not-strings", SELECT, replaced("context.selections", [1]), "context.selections[0]", "string"),
    (
        "authorization-without-server",
        SIGN,
        {
            **without("fhirServer"),
            "fhirAuthorization": {
                "access_token": "tok",
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": "patient/*.read",
                "subject": "cds",
            },
        },
        None,
        "fhirServer is required",
    ),
    (
        "feedback-missing-outcome",
        f"{SIGN}/feedback",
        {"feedback": [{"card": "c", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]},
        "feedback[0].outcome",
        "required",
    ),
    (
        "feedback-bad-outcome",
        f"{SIGN}/feedback",
        {"feedback": [{"card": "c", "outcome": "ignored", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]},
        "feedback[0].outcome",
        "accepted",
    ),
    (
        "feedback-accepted-without-suggestions",
        f"{SIGN}/feedback",
        {"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]},
        "feedback[0]",
        "acceptedSuggestions",
    ),
    (
        "feedback-timestamp-without-zone",
        f"{SIGN}/feedback",
        {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00"}]},
        "feedback[0].outcomeTimestamp",
        "timezone",
    ),
    ("feedback-empty", f"{SIGN}/feedback", {"feedback": []}, "feedback", "at least 1"),
]


def _send(client, path, body):
    if isinstance(body, (dict, list)):
        return client.post(path, data=json.dumps(body), content_type="application/json")
    return client.post(path, data=body, content_type="application/json")


def assert_outcome(response, status: int, field: str | None = None, words: str = "") -> None:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    outcome = response.json
    assert outcome["resourceType"] == "OperationOutcome"
    (issue,) = outcome["issue"]
    assert issue["severity"] == "error"
    assert issue["diagnostics"]
    assert words in issue["diagnostics"], issue["diagnostics"]
    if field is not None:
        assert issue["expression"] == [field]


@pytest.mark.parametrize(
    ("path", "body", "field", "words"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
def test_bad_input_is_a_400_naming_the_problem(client, path, body, field, words):
    assert_outcome(_send(client, path, body), 400, field, words)
    # ...and the server keeps serving.
    assert client.post(SIGN, json=hook_request(IRE)).status_code == 200


@pytest.mark.parametrize(
    ("expires_in", "status"),
    [
        *[(value, 200) for value in (300, 300.0, 42355138650.0, 2**53, -(2**53), float(2**53))],
        *[(value, 400) for value in ("300", True, 300.5, 2**53 + 1, float(2**60), 2**63 - 1, 2**64, -(2**70))],
    ],
)
def test_expires_in_is_a_json_integer_any_parser_reads_exactly(client, expires_in, status):
    authorization = {
        "access_token": "tok",
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": "patient/*.read",
        "subject": "cds",
    }
    body = hook_request(service_request("sr", code="74177"), fhirAuthorization=authorization)
    response = client.post(SIGN, json=body)
    assert response.status_code == status, response.json
    if status == 400:
        assert_outcome(response, 400, "fhirAuthorization.expires_in")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("post", "/cds-services/no-such-service", 404),
        ("post", "/cds-services/no-such-service/feedback", 404),
        ("get", "/no/such/route", 404),
        ("get", "/evidence/NO.SUCH", 404),
        ("get", "/evidence/NO.SUCH.json", 404),
        ("get", SIGN, 405),
        ("put", SIGN, 405),
        ("delete", SIGN, 405),
        ("post", "/cds-services", 405),
        ("delete", "/cds-services", 405),
        ("get", f"{SIGN}/feedback", 405),
    ],
)
def test_routing_errors_are_json(client, method, path, status):
    response = getattr(client, method)(path, json=hook_request(IRE))
    assert_outcome(response, status)
    if status == 405:
        assert response.headers["Allow"]


def test_unknown_service_is_404_before_reading_the_body(client):
    response = client.post("/cds-services/nope", data="{", content_type="application/json")
    assert_outcome(response, 404, words="nope")


def test_body_over_the_limit_is_413():
    client = create_app({"max_body_bytes": 2048}).test_client()
    big = hook_request(service_request("sr", code="0600T", note=[{"text": "x" * 4096}]))
    assert_outcome(client.post(SIGN, json=big), 413)
    assert_outcome(client.post(f"{SIGN}/feedback", data="x" * 4096, content_type="application/json"), 413)
    assert client.post(SIGN, json=hook_request(service_request("sr", code="0600T"))).status_code == 200


def test_default_body_limit_admits_a_large_realistic_request(client):
    orders = [service_request(f"sr-{i}", code="74177", note=[{"text": "n" * 2000}]) for i in range(500)]
    assert client.post(SIGN, json=hook_request(*orders)).status_code == 200


def test_deeply_nested_json_is_a_400(client):
    deep = '{"hook": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert_outcome(_send(client, SIGN, deep), 400, words="nested more than 64 levels")


def test_nesting_limit_is_configurable_and_counts_real_depth():
    client = create_app({"max_json_depth": 10}).test_client()
    nested: object = "leaf"
    for _ in range(12):
        nested = {"x": nested}
    body = hook_request(service_request("sr", code="0600T", extension=[{"url": "u", "valueString": "v"}]))
    body["context"]["deep"] = nested
    assert_outcome(client.post(SIGN, json=body), 400, words="nested more than 10 levels")
    # Many brackets, little depth: fine.
    wide = hook_request(*[service_request(f"sr-{i}", code="74177") for i in range(50)])
    assert client.post(SIGN, json=wide).status_code == 200
    # Brackets inside strings do not count.
    assert (
        client.post(SIGN, json=hook_request(service_request("s", text="[[[[[[[[[[[[{{{{{{{{{{{{"))).status_code == 200
    )


def test_an_internal_error_is_a_json_500_without_details(app, monkeypatch):
    def boom(*_args, **_kwargs):
        raise RuntimeError("patient Jane Doe broke it")

    monkeypatch.setattr(app.extensions["cds_engine"], "evaluate", boom)
    response = app.test_client().post(SIGN, json=hook_request(IRE))
    assert_outcome(response, 500)
    assert "Jane" not in response.get_data(as_text=True)
