"""Health, readiness, metrics, request ids, the request log line and the OpenAPI document,
against the app in process."""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid

import jsonschema
import pytest
from openapi_spec_validator import validate as validate_openapi
from prometheus_client import REGISTRY

from cds_service import create_app
from cds_service.logs import json_formatter
from cds_service.openapi import OPENAPI_KEY
from cds_service.ops import NotReady, add_readiness_check
from cds_service.services import SERVICES
from tests.conftest import SELECT, SIGN, hook_request, sandbox_fixtures, service_request
from tests.test_auth import ISS, Key, write_clients
from tests.test_sandbox_fixtures import our_path

IRE = service_request("sr-ire", code="0600T")
SIGN_ID = SIGN.rsplit("/", 1)[1]
FEEDBACK = {"feedback": [{"card": "c-1", "outcome": "overridden", "outcomeTimestamp": "2026-11-26T10:00:00Z"}]}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "cds_service.request"]


# --- health and readiness ---------------------------------------------------------------------


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json == {
        "status": "ready",
        "checks": [
            {"name": "policies", "status": "pass", "detail": "SURG.00126 2024-04-01"},
            {"name": "database", "status": "pass", "detail": "sqlite reachable"},
        ],
    }


def test_a_failing_readiness_check_makes_readyz_503_without_leaking_its_error(app, client):
    def cache() -> str:
        raise ConnectionError("could not connect to redis://cds:s3cret@cache")

    def spool() -> str:
        raise NotReady("spool directory is full")

    add_readiness_check(app, "cache", cache)
    add_readiness_check(app, "spool", spool)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["status"] == "not-ready"
    assert response.json["checks"][2:] == [
        {"name": "cache", "status": "fail", "detail": "ConnectionError"},
        {"name": "spool", "status": "fail", "detail": "spool directory is full"},
    ]
    assert "s3cret" not in response.get_data(as_text=True)
    with pytest.raises(ValueError, match="already registered"):
        add_readiness_check(app, "cache", cache)


# --- metrics ----------------------------------------------------------------------------------


def test_metrics_count_requests_cards_and_feedback(client):
    before = {
        "hooks": sample("cds_http_requests_total", endpoint="api.call_service", service=SIGN_ID, status="200"),
        "bad": sample("cds_http_requests_total", endpoint="api.call_service", service=SIGN_ID, status="400"),
        "unrouted": sample("cds_http_requests_total", endpoint="unrouted", service="", status="404"),
        "latency": sample(
            "cds_http_request_duration_seconds_count", endpoint="api.call_service", service=SIGN_ID, status="200"
        ),
        "cards": sample("cds_cards_issued_total", policy="SURG.00126"),
        "overridden": sample("cds_feedback_total", service=SIGN_ID, outcome="overridden"),
    }
    assert client.post(SIGN, json=hook_request(IRE, IRE | {"id": "sr-2"})).status_code == 200
    assert client.post(SIGN, json=hook_request(service_request("ct", code="74177"))).status_code == 200
    assert client.post(SIGN, data="{").status_code == 400
    assert client.post(f"{SIGN}/feedback", json=FEEDBACK).status_code == 200
    assert client.get("/no/such/path").status_code == 404

    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    assert "cds_http_request_duration_seconds_bucket" in response.get_data(as_text=True)
    assert sample("cds_http_requests_total", endpoint="api.call_service", service=SIGN_ID, status="200") == (
        before["hooks"] + 2
    )
    assert sample("cds_http_requests_total", endpoint="api.call_service", service=SIGN_ID, status="400") == (
        before["bad"] + 1
    )
    assert sample("cds_http_requests_total", endpoint="unrouted", service="", status="404") == before["unrouted"] + 1
    assert sample(
        "cds_http_request_duration_seconds_count", endpoint="api.call_service", service=SIGN_ID, status="200"
    ) == (before["latency"] + 2)
    # One card for two IRE orders, none for the CT.
    assert sample("cds_cards_issued_total", policy="SURG.00126") == before["cards"] + 1
    assert sample("cds_feedback_total", service=SIGN_ID, outcome="overridden") == before["overridden"] + 1


def test_refused_clients_are_counted_by_reason_and_their_401_is_documented(tmp_path):
    clients = write_clients(tmp_path / "clients.yaml", [{"iss": ISS, "jwks": {"keys": [Key("EC", "k-1").jwk]}}])
    app = create_app({"base_url": "https://cds.example.org", "trusted_clients": clients})
    client = app.test_client()
    missing, malformed = (
        sample("cds_auth_failures_total", reason="missing"),
        sample("cds_auth_failures_total", reason="malformed"),
    )
    refused = client.post(SIGN, json=hook_request(IRE))
    client.post(f"{SIGN}/feedback", json=FEEDBACK, headers={"Authorization": "Basic abc"})
    assert sample("cds_auth_failures_total", reason="missing") == missing + 1
    assert sample("cds_auth_failures_total", reason="malformed") == malformed + 1

    document = app.extensions[OPENAPI_KEY]
    validate_openapi(document)
    assert document["paths"][SIGN]["post"]["security"] == [{"cdsClientJwt": []}]
    assert_matches(document, SIGN, "post", refused)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")


def test_unknown_service_ids_do_not_become_metric_labels(client):
    client.post("/cds-services/attacker-chosen-label", json={})
    assert "attacker-chosen-label" not in client.get("/metrics").get_data(as_text=True)


# --- request ids and the request log line -----------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("3f2a9c1e-7b4d-4e0a-9d1c-2b6f8e4a1c3d", True),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", True),
        ("ehr:trace/42+a=b@c~d", True),
        ("", False),
        ("two words", False),
        ('quote"d', False),
        ("x" * 129, False),
        ("\u00e9t\u00e9", False),
    ],
)
def test_request_id_is_echoed_when_sane_and_replaced_otherwise(client, sent, kept):
    headers = {"X-Request-ID": sent.encode().decode("latin-1")}
    response = client.post(SIGN, json=hook_request(IRE), headers=headers)
    echoed = response.headers["X-Request-ID"]
    if kept:
        assert echoed == sent
    else:
        assert echoed != sent and uuid.UUID(echoed)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/cds-services", 200), ("GET", SIGN, 405), ("POST", SIGN, 400), ("GET", "/nope", 404)],
)
def test_every_response_carries_a_request_id(client, method, path, status):
    response = client.open(path, method=method, data="{")
    assert response.status_code == status
    assert uuid.UUID(response.headers["X-Request-ID"])


def test_one_log_line_per_request_with_ids_and_counts_but_no_tokens_or_patient_data(client, caplog):
    caplog.set_level(logging.INFO)
    body = hook_request(
        IRE | {"note": [{"text": "Jane Q Patient, MRN SECRET-MRN-123"}]},
        fhirAuthorization={
            "access_token": "SECRET-ACCESS-TOKEN",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "cds-service",
        },
    )
    response = client.post(SIGN, json=body, headers={"X-Request-ID": "ehr-42", "Authorization": "Bearer SECRET-JWT"})
    assert response.status_code == 200

    (line,) = request_lines(caplog)
    formatted = json.loads(json_formatter().format(line))
    assert formatted["message"] == "request" and formatted["level"] == "INFO"
    assert formatted["request_id"] == "ehr-42"
    assert formatted["service"] == "medical-policy-order-sign"
    assert formatted["hookInstance"] == body["hookInstance"]
    assert formatted["status"] == 200 and formatted["cards"] == 1 and formatted["examined"] == 1
    assert formatted["latency_ms"] > 0 and "time" in formatted
    everything = "\n".join(json_formatter().format(r) for r in caplog.records)
    for secret in ("SECRET-ACCESS-TOKEN", "SECRET-JWT", "SECRET-MRN-123", "Jane Q Patient", "pat-1"):
        assert secret not in everything


def test_errors_and_feedback_get_their_line_too(client, caplog):
    caplog.set_level(logging.DEBUG)
    client.post(SIGN, data="{")
    client.post(f"{SELECT}/feedback", json=FEEDBACK)
    client.get("/healthz")
    bad, feedback, probe = request_lines(caplog)
    assert (bad.status, bad.endpoint, bad.levelno) == (400, "api.call_service", logging.INFO)
    assert not hasattr(bad, "hookInstance")
    assert feedback.feedback == {"overridden": 1} and feedback.service == "medical-policy-order-select"
    assert probe.levelno == logging.DEBUG, "probes would flood the INFO log"


def test_engine_warnings_carry_the_request_id(client, caplog):
    caplog.set_level(logging.INFO)
    invalid = IRE | {"status": 42}
    client.post(SIGN, json=hook_request(invalid), headers={"X-Request-ID": "trace-7"})
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert json.loads(json_formatter().format(warning))["request_id"] == "trace-7"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"hookInstance": "plain"}, "plain"),
        ({"hookInstance": "caf\u00e9 \U0001fa7a"}, "caf\u00e9 \U0001fa7a"),
        ({"hookInstance": "lone \ud800"}, "lone \ud800"),
        ({"count": 2**70}, 2**70),
    ],
)
def test_log_lines_are_ascii_json_whatever_the_fields_hold(extra, expected):
    record = logging.LogRecord("cds_service.request", logging.INFO, __file__, 1, "request", (), None)
    record.__dict__.update(extra)
    line = json_formatter().format(record)
    assert line.isascii()
    parsed = json.loads(line)
    assert parsed[next(iter(extra))] == expected
    assert list(parsed)[:3] == ["level", "logger", "message"] and parsed["time"].endswith("+00:00")


def test_extra_fields_cannot_replace_the_lines_own_keys():
    record = logging.LogRecord("cds_service.request", logging.INFO, __file__, 1, "request", (), None)
    record.__dict__.update({"level": "FAKE", "logger": "fake", "time": "never", "status": 200})
    parsed = json.loads(json_formatter().format(record))
    assert (parsed["level"], parsed["logger"], parsed["status"]) == ("INFO", "cds_service.request", 200)
    assert parsed["time"] != "never"


def test_a_logged_exception_carries_its_traceback():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    parsed = json.loads(json_formatter().format(record))
    assert parsed["message"] == "failed" and "ValueError: boom" in parsed["exc_info"]


# --- the OpenAPI document ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def document() -> dict:
    return create_app().extensions[OPENAPI_KEY]


def schema_for(document: dict, path: str, method: str, status: int, media: str = "application/json") -> dict:
    response = document["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return {**response["content"][media]["schema"], "components": document["components"]}


def assert_matches(document: dict, path: str, method: str, response) -> None:
    media = response.mimetype
    documented = document["paths"][path][method]["responses"]
    assert str(response.status_code) in documented, f"{method} {path} answered an undocumented {response.status_code}"
    if media == "application/json":
        schema = schema_for(document, path, method, response.status_code, media)
        jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(response.json)
    else:
        assert media in documented[str(response.status_code)]["content"]


def test_the_document_is_valid_openapi_3_1(app, client, document):
    validate_openapi(document)
    assert document["openapi"] == "3.1.0" and "servers" not in document
    served = client.get("/openapi.json").json
    assert served == app.extensions[OPENAPI_KEY]
    assert served["servers"] == [{"url": "https://cds.example.org"}]


def test_the_document_covers_every_route_and_method(app, document):
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        paths = [f"/cds-services/{s.id}" + path[len("/cds-services/{service_id}") :] for s in SERVICES]
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            for concrete in paths if "{service_id}" in path else [path]:
                assert (concrete, method) in documented, f"{method} {concrete} is missing from /openapi.json"


def test_every_kind_of_response_matches_the_document(app, client, document):
    responses = [
        ("/cds-services", "get", client.get("/cds-services")),
        (SIGN, "post", client.post(SIGN, json=hook_request(IRE))),
        (SIGN, "post", client.post(SIGN, data="[]")),
        (SELECT, "post", client.post(SELECT, json=hook_request(IRE, selections=["ServiceRequest/sr-ire"]))),
        (SELECT, "post", client.post(SELECT, json=hook_request(IRE))),
        (f"{SIGN}/feedback", "post", client.post(f"{SIGN}/feedback", json=FEEDBACK)),
        (f"{SIGN}/feedback", "post", client.post(f"{SIGN}/feedback", json={"feedback": []})),
        ("/evidence/{policy_id}", "get", client.get("/evidence/SURG.00126")),
        ("/evidence/{policy_id}", "get", client.get("/evidence/NOPE")),
        ("/evidence/{policy_id}.json", "get", client.get("/evidence/SURG.00126.json")),
        ("/evidence/{policy_id}.json", "get", client.get("/evidence/NOPE.json")),
        ("/healthz", "get", client.get("/healthz")),
        ("/readyz", "get", client.get("/readyz")),
        ("/metrics", "get", client.get("/metrics")),
        ("/openapi.json", "get", client.get("/openapi.json")),
    ]
    app.config["MAX_CONTENT_LENGTH"] = 100
    responses.append((SIGN, "post", client.post(SIGN, json=hook_request(IRE))))
    add_readiness_check(app, "never", lambda: (_ for _ in ()).throw(NotReady("never ready")))
    responses.append(("/readyz", "get", client.get("/readyz")))
    assert {r.status_code for _, _, r in responses} == {200, 400, 404, 413, 503}
    for path, method, response in responses:
        assert_matches(document, path, method, response)


@pytest.mark.parametrize(
    "fixture", [f for f in sandbox_fixtures() if json.loads(f.read_text())["method"] == "POST"], ids=lambda p: p.stem
)
def test_real_client_requests_fit_the_documented_request_schemas(document, fixture):
    """What the reference sandbox really sent must be valid by the document, quirks and all."""
    recorded = json.loads(fixture.read_text())
    operation = document["paths"][our_path(recorded["path"])]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**body, "components": document["components"]}).validate(recorded["body"])
