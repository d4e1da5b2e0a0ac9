"""Patient and coverage context: prefetch semantics and the FHIR-server fallback, against a real
HTTP server on 127.0.0.1 (pytest-httpserver)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import Any

import pytest
from werkzeug import Request, Response

from cds_service import create_app
from cds_service.context import (
    UNAVAILABLE_EXTENSION,
    ContextKey,
    FhirFetcher,
    PatientContext,
    Unavailable,
    read_context,
    scope_allows,
)
from cds_service.hookrequest import parse_hook_request
from cds_service.services import PREFETCH
from tests.conftest import (
    SIGN,
    assert_valid_response,
    coverage_resource,
    hook_request,
    patient_resource,
    searchset,
    service_request,
)
from tests.pgserver import free_port

TOKEN = "tok-7f3a9c1e-SECRET-never-logged"
IRE = service_request("sr-ire", code="0600T", text="IRE of liver tumor")
TODAY = dt.date(2026, 11, 26)
ERROR_OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "exception", "diagnostics": "upstream failure"}],
}


def authorization(scope: str = "patient/Patient.read patient/Coverage.read", **extra: Any) -> dict[str, Any]:
    return {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 30,
        "scope": scope,
        "subject": "cds-service",
        "patient": "pat-1",
        **extra,
    }


def request_for(server_url: str | None, **extra: Any) -> dict[str, Any]:
    body = hook_request(IRE, **extra)
    if server_url is None:
        del body["fhirServer"]
    else:
        body["fhirServer"] = server_url
    return body


def read(body: dict[str, Any], budget_ms: int = 400, open_server: bool = False) -> PatientContext:
    return read_context(PREFETCH, parse_hook_request(body), FhirFetcher(budget_ms, open_server), TODAY)


def serve_fhir(httpserver, patient: Any = None, coverages: Any = None) -> None:
    httpserver.expect_request("/fhir/Patient/pat-1").respond_with_json(
        patient or patient_resource(), content_type="application/fhir+json"
    )
    httpserver.expect_request("/fhir/Coverage").respond_with_json(
        coverages or searchset(coverage_resource()), content_type="application/fhir+json"
    )


# Prefetch semantics -------------------------------------------------------------------------


def test_prefetch_present_is_used_without_a_request(httpserver):
    body = request_for(
        httpserver.url_for("/fhir"),
        fhirAuthorization=authorization(),
        prefetch={"patient": patient_resource(), "coverage": searchset(coverage_resource())},
    )
    context = read(body)
    assert context.patient["id"] == "pat-1"
    assert [c["id"] for c in context.coverages] == ["cov-1"]
    assert context.unavailable == {}
    assert httpserver.log == []


def test_null_prefetch_means_no_data_and_no_request(httpserver):
    body = request_for(
        httpserver.url_for("/fhir"), fhirAuthorization=authorization(), prefetch={"patient": None, "coverage": None}
    )
    context = read(body)
    assert context.patient is None
    assert context.coverages == ()  # a null search: the patient has no coverage
    assert context.unavailable == {ContextKey.PATIENT: Unavailable.NOT_FOUND}
    assert httpserver.log == []


def test_an_empty_search_bundle_means_no_coverage():
    context = read(request_for(None, prefetch={"patient": patient_resource(), "coverage": searchset()}))
    assert context.coverages == ()
    assert context.unavailable == {}


def test_operation_outcome_in_prefetch_is_fetched_again(httpserver):
    serve_fhir(httpserver)
    failed_search = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": ERROR_OUTCOME}]}
    body = request_for(
        httpserver.url_for("/fhir"),
        fhirAuthorization=authorization(),
        prefetch={"patient": ERROR_OUTCOME, "coverage": failed_search},
    )
    context = read(body)
    assert context.patient["id"] == "pat-1" and [c["id"] for c in context.coverages] == ["cov-1"]
    assert sorted(r.path for r, _ in httpserver.log) == ["/fhir/Coverage", "/fhir/Patient/pat-1"]


def test_operation_outcome_without_a_server_to_ask_is_reported_as_failed():
    context = read(request_for(None, prefetch={"patient": ERROR_OUTCOME, "coverage": ERROR_OUTCOME}))
    assert context.unavailable == {ContextKey.PATIENT: Unavailable.FAILED, ContextKey.COVERAGE: Unavailable.FAILED}


def test_informational_outcomes_in_a_search_are_not_failures():
    warning = {"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": "informational"}]}
    bundle = searchset(coverage_resource())
    bundle["entry"].append({"resource": warning, "search": {"mode": "outcome"}})
    context = read(request_for(None, prefetch={"patient": patient_resource(), "coverage": bundle}))
    assert [c["id"] for c in context.coverages] == ["cov-1"]


def test_only_coverage_in_force_counts():
    bundle = searchset(
        coverage_resource("cov-active", period={"start": "2026-01-01", "end": "2026-12-31"}),
        coverage_resource("cov-cancelled", status="cancelled"),
        coverage_resource("cov-ended", period={"end": "2025-12-31T23:59:59Z"}),
        coverage_resource("cov-future", period={"start": "2027-01-01"}),
        patient_resource("not-a-coverage"),
    )
    context = read(request_for(None, prefetch={"patient": patient_resource(), "coverage": bundle}))
    assert [c["id"] for c in context.coverages] == ["cov-active"]


@pytest.mark.parametrize(
    "prefetch",
    [
        {"patient": ["not", "a", "resource"], "coverage": "text"},
        {"patient": searchset(patient_resource()), "coverage": patient_resource()},
    ],
)
def test_malformed_prefetch_is_a_failed_fetch(prefetch):
    context = read(request_for(None, prefetch=prefetch))
    assert context.unavailable == {ContextKey.PATIENT: Unavailable.FAILED, ContextKey.COVERAGE: Unavailable.FAILED}


# Fetching from the FHIR server ---------------------------------------------------------------


def test_absent_keys_are_fetched_with_the_bearer_token(httpserver):
    serve_fhir(httpserver)
    body = request_for(httpserver.url_for("/fhir/"), fhirAuthorization=authorization())
    context = read(body)
    assert context.patient["id"] == "pat-1" and [c["id"] for c in context.coverages] == ["cov-1"]
    assert context.unavailable == {}
    requests_seen = {r.path: r for r, _ in httpserver.log}
    assert set(requests_seen) == {"/fhir/Patient/pat-1", "/fhir/Coverage"}
    search = requests_seen["/fhir/Coverage"]
    assert search.query_string.decode() == "patient=pat-1&status=active"
    for request in requests_seen.values():
        assert request.method == "GET"
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert request.headers["Accept"] == "application/fhir+json"


def test_only_the_missing_key_is_fetched(httpserver):
    serve_fhir(httpserver)
    body = request_for(
        httpserver.url_for("/fhir"), fhirAuthorization=authorization(), prefetch={"patient": patient_resource()}
    )
    assert read(body).coverages is not None
    assert [r.path for r, _ in httpserver.log] == ["/fhir/Coverage"]


def test_server_down():
    body = request_for(f"http://127.0.0.1:{free_port()}/fhir", fhirAuthorization=authorization())
    context = read(body)
    assert context.unavailable == {ContextKey.PATIENT: Unavailable.FAILED, ContextKey.COVERAGE: Unavailable.FAILED}


def test_slow_server_past_the_budget(httpserver):
    def slow(request: Request) -> Response:
        time.sleep(1.0)
        return Response(json.dumps(patient_resource()), content_type="application/fhir+json")

    httpserver.expect_request("/fhir/Patient/pat-1").respond_with_handler(slow)
    httpserver.expect_request("/fhir/Coverage").respond_with_handler(slow)
    context = read(request_for(httpserver.url_for("/fhir"), fhirAuthorization=authorization()), budget_ms=100)
    assert context.unavailable == {ContextKey.PATIENT: Unavailable.TIMEOUT, ContextKey.COVERAGE: Unavailable.TIMEOUT}
    # Let the abandoned slow answers finish here, so they land in this test's log, not the next's.
    deadline = time.monotonic() + 10
    while len(httpserver.log) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(httpserver.log) == 2


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (401, Unavailable.NOT_AUTHORIZED),
        (403, Unavailable.NOT_AUTHORIZED),
        (404, Unavailable.NOT_FOUND),
        (410, Unavailable.NOT_FOUND),
        (500, Unavailable.FAILED),
        (302, Unavailable.FAILED),  # redirects are not followed: the token stays with the server
    ],
)
def test_error_statuses(httpserver, status, reason):
    headers = {"Location": "http://127.0.0.1:9/elsewhere"} if status == 302 else None
    httpserver.expect_request("/fhir/Patient/pat-1").respond_with_json(ERROR_OUTCOME, status=status, headers=headers)
    httpserver.expect_request("/fhir/Coverage").respond_with_json(ERROR_OUTCOME, status=status, headers=headers)
    context = read(request_for(httpserver.url_for("/fhir"), fhirAuthorization=authorization()))
    assert context.unavailable == {ContextKey.PATIENT: reason, ContextKey.COVERAGE: reason}
    assert len(httpserver.log) == 2


@pytest.mark.parametrize(
    "answer",
    [
        "<html><body>Login required</body></html>",
        '{"resourceType": "Patient", "id": ',
        '["a", "list"]',
        json.dumps(ERROR_OUTCOME),
        json.dumps({"resourceType": "Observation", "id": "o1"}),
        "[" * 100000,
    ],
    ids=["html", "truncated", "list", "outcome", "wrong-type", "deep"],
)
def test_garbage_answers(httpserver, answer):
    httpserver.expect_request("/fhir/Patient/pat-1").respond_with_data(answer, content_type="application/fhir+json")
    httpserver.expect_request("/fhir/Coverage").respond_with_data(answer, content_type="application/fhir+json")
    context = read(request_for(httpserver.url_for("/fhir"), fhirAuthorization=authorization()))
    assert context.unavailable == {ContextKey.PATIENT: Unavailable.FAILED, ContextKey.COVERAGE: Unavailable.FAILED}


def test_token_scope_is_respected(httpserver):
    serve_fhir(httpserver)
    body = request_for(httpserver.url_for("/fhir"), fhirAuthorization=authorization(scope="patient/Patient.read"))
    context = read(body)
    assert context.patient["id"] == "pat-1"
    assert context.unavailable == {ContextKey.COVERAGE: Unavailable.NOT_AUTHORIZED}
    assert [r.path for r, _ in httpserver.log] == ["/fhir/Patient/pat-1"]


def test_a_token_for_another_patient_is_not_used(httpserver):
    serve_fhir(httpserver)
    body = request_for(httpserver.url_for("/fhir"), fhirAuthorization=authorization(patient="someone-else"))
    context = read(body)
    assert context.unavailable == {
        ContextKey.PATIENT: Unavailable.NOT_AUTHORIZED,
        ContextKey.COVERAGE: Unavailable.NOT_AUTHORIZED,
    }
    assert httpserver.log == []


@pytest.mark.parametrize(
    ("scopes", "resource", "permission", "allowed"),
    [
        ("patient/*.read", "Coverage", "s", True),
        ("user/*.*", "Patient", "r", True),
        ("patient/*.* user/*.* launch openid profile online_access", "Coverage", "s", True),  # the sandbox's
        ("patient/Coverage.rs", "Coverage", "s", True),  # SMART 2.0
        ("patient/Coverage.r", "Coverage", "s", False),  # read without search
        ("patient/Patient.cruds", "Patient", "r", True),
        ("system/Patient.read", "Patient", "r", True),
        ("patient/Coverage.write", "Coverage", "s", False),
        ("patient/Coverage.rs?status=active", "Coverage", "s", False),  # narrowed by a query
        ("patient/Observation.read launch/patient openid", "Patient", "r", False),
        ("", "Patient", "r", False),
    ],
)
def test_scope_allows(scopes, resource, permission, allowed):
    assert scope_allows(scopes, resource, permission) is allowed


def test_open_servers_are_queried_only_when_configured(httpserver):
    serve_fhir(httpserver)
    body = request_for(httpserver.url_for("/fhir"))
    closed = read(body, open_server=False)
    assert closed.unavailable == {
        ContextKey.PATIENT: Unavailable.NOT_PROVIDED,
        ContextKey.COVERAGE: Unavailable.NOT_PROVIDED,
    }
    assert httpserver.log == []
    opened = read(body, open_server=True)
    assert opened.unavailable == {} and opened.patient["id"] == "pat-1"
    assert all("Authorization" not in r.headers for r, _ in httpserver.log)


def test_non_http_servers_are_not_queried():
    body = request_for("file:///etc/passwd", fhirAuthorization=authorization())
    assert read(body).unavailable[ContextKey.PATIENT] is Unavailable.NOT_PROVIDED


def test_no_fetcher_means_prefetch_only():
    body = request_for("https://ehr.example.org/fhir", fhirAuthorization=authorization())
    context = read_context(PREFETCH, parse_hook_request(body), None, TODAY)
    assert context.unavailable == {
        ContextKey.PATIENT: Unavailable.NOT_PROVIDED,
        ContextKey.COVERAGE: Unavailable.NOT_PROVIDED,
    }


def test_the_token_and_patient_id_never_reach_the_logs(httpserver, caplog):
    caplog.set_level(logging.DEBUG)
    secret_patient = "PATIENT-ID-4417-NOT-LOGGED"
    httpserver.expect_request(f"/fhir/Patient/{secret_patient}").respond_with_json(ERROR_OUTCOME, status=401)
    httpserver.expect_request("/fhir/Coverage").respond_with_data("not json at all")
    app = create_app({"fhir_budget_ms": 400})
    body = request_for(httpserver.url_for("/fhir"), fhirAuthorization=authorization(patient=secret_patient))
    body["context"]["patientId"] = secret_patient
    response = app.test_client().post(SIGN, json=body)
    assert response.status_code == 200 and len(response.json["cards"]) == 1
    down = request_for(f"http://127.0.0.1:{free_port()}/fhir", fhirAuthorization=authorization(patient=secret_patient))
    down["context"]["patientId"] = secret_patient
    assert app.test_client().post(SIGN, json=down).status_code == 200
    assert len(httpserver.log) == 2
    # Everything the service (and requests / urllib3 under it) logged; werkzeug's lines are the
    # stand-in EHR server's own access log.
    logged = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records if r.name != "werkzeug")
    assert "not-authorized" in logged and "failed" in logged  # the outcomes are logged ...
    assert TOKEN not in logged and "Bearer" not in logged  # ... the token is not
    assert secret_patient not in logged


# Through the HTTP layer: the card always comes back ---------------------------------------------


@pytest.mark.parametrize("with_server", [False, True])
def test_missing_context_never_costs_the_card(with_server, httpserver):
    if with_server:
        httpserver.expect_request("/fhir/Patient/pat-1").respond_with_json(ERROR_OUTCOME, status=503)
        httpserver.expect_request("/fhir/Coverage").respond_with_json(ERROR_OUTCOME, status=401)
        body = request_for(httpserver.url_for("/fhir"), fhirAuthorization=authorization())
        expected = {"patient": "failed", "coverage": "not-authorized"}
    else:
        body = request_for(None)
        expected = {"patient": "not-provided", "coverage": "not-provided"}
    response = create_app({}).test_client().post(SIGN, json=body)
    assert response.status_code == 200  # never 412: patient and coverage are optional enrichment
    assert_valid_response(response.json)
    (card,) = response.json["cards"]
    assert response.json["extension"] == {UNAVAILABLE_EXTENSION: expected}
    assert "Plan-specific guidance could not be checked: patient and coverage data were not available" in card["detail"]


def test_nothing_is_fetched_when_no_order_matches(httpserver):
    serve_fhir(httpserver)
    body = hook_request(service_request("sr-ct", code="74177"), fhirAuthorization=authorization())
    body["fhirServer"] = httpserver.url_for("/fhir")
    response = create_app({}).test_client().post(SIGN, json=body)
    assert response.json == {"cards": []}
    assert httpserver.log == []


def test_full_context_reports_nothing_unavailable(httpserver):
    serve_fhir(httpserver)
    body = request_for(httpserver.url_for("/fhir"), fhirAuthorization=authorization())
    response = create_app({}).test_client().post(SIGN, json=body)
    assert "extension" not in response.json
    assert "could not be checked" not in response.json["cards"][0]["detail"]
