"""The patient and their active coverage: from prefetch, else from the client's FHIR server.

Free of Flask, so the CLI and benchmarks run the engine on prefetch alone (no fetcher) while the
HTTP layer injects a :class:`FhirFetcher`. Both are optional enrichment: nothing here raises to
the caller, and a hook call never fails (no 412) for want of them; what could not be had is
reported in :attr:`PatientContext.unavailable`.

Prefetch semantics (CDS Hooks 2.0 "Prefetch Template" and "Prefetch tokens"):

- key absent: the client did not satisfy it, so query ``fhirServer`` ourselves;
- key ``null``: the data does not exist (no patient; no coverage), so do not query;
- an ``OperationOutcome`` (or a Bundle holding an error one): the client failed to fetch it,
  so query ourselves if we may.

Querying (CDS Hooks 2.0 "FHIR Resource Access"): only with ``fhirAuthorization`` (bearer token)
whose ``patient`` is the context patient and whose SMART scopes grant the read or search, or,
when ``fhir_open_server`` is set, an unauthenticated server. All queries run in parallel under
one wall-clock budget, without retries or redirects. Logs name the prefetch key and the outcome,
never the token, the URL (it carries the patient id) or resource content.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol

import requests

from cds_service.hookrequest import FhirAuthorization, HookRequest
from cds_service.prefetch import resolve_template

log = logging.getLogger(__name__)

# urllib3 logs each request line (and so the patient id in the path) at DEBUG.
logging.getLogger("urllib3").setLevel(max(logging.INFO, logging.getLogger("urllib3").level))

FHIR_JSON = "application/fhir+json"
# The response extension (CDS Hooks 2.0 "Extensions") naming the context that could not be had:
# {"patient": "<Unavailable>", "coverage": "<Unavailable>"}. Prefixed with the project's name, as
# Da Vinci CRD prefixes its own keys ("davinci-crd.configuration").
UNAVAILABLE_EXTENSION = "cds-service.context-unavailable"
MAX_RESPONSE_BYTES = 2 * 1024 * 1024  # a patient or a page of Coverage is far smaller


class ContextKey(StrEnum):
    """The prefetch keys the services declare (cds_service.services.PREFETCH)."""

    PATIENT = "patient"
    COVERAGE = "coverage"


class Unavailable(StrEnum):
    """Why a piece of context is missing; reported in the response extension."""

    # No prefetch, and no FHIR server this service may query (none given, no token while open
    # servers are not queried, a template token the request cannot fill).
    NOT_PROVIDED = "not-provided"
    # Prefetch null, or the server answered 404/410: the data does not exist.
    NOT_FOUND = "not-found"
    # The token's patient or scopes do not allow the query, or the server answered 401/403.
    NOT_AUTHORIZED = "not-authorized"
    # The server did not answer within the budget.
    TIMEOUT = "timeout"
    # Unreachable server, another error status, a malformed answer, or a client-side fetch
    # failure (OperationOutcome in prefetch) that could not be made up for.
    FAILED = "failed"


# What each key reads, for the SMART scope check: resource type and the v2 permission needed.
_ACCESS: Mapping[ContextKey, tuple[str, str]] = {
    ContextKey.PATIENT: ("Patient", "r"),
    ContextKey.COVERAGE: ("Coverage", "s"),
}

_KEYS = frozenset(k.value for k in ContextKey)
_EMPTY_SEARCH: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": 0}
Fetched = dict[str, Any] | Unavailable


@dataclass(frozen=True, slots=True)
class PatientContext:
    """What the service knows about the patient beyond the orders."""

    patient: Mapping[str, Any] | None = None
    # Coverage resources in force today; None when unknown, () when known to be none.
    coverages: tuple[Mapping[str, Any], ...] | None = None
    unavailable: Mapping[ContextKey, Unavailable] = field(default_factory=lambda: MappingProxyType({}))


class Fetcher(Protocol):
    """Runs prefetch queries against the client's FHIR server (injected; tests use real HTTP)."""

    def fetch(self, request: HookRequest, queries: Mapping[ContextKey, str]) -> dict[ContextKey, Fetched]: ...


def _failed_outcome(resource: Mapping[str, Any]) -> bool:
    """An OperationOutcome reporting an error (one without issues counts as an error)."""
    issues = resource.get("issue")
    if not isinstance(issues, list) or not issues:
        return True
    return any(isinstance(i, dict) and i.get("severity") in ("fatal", "error") for i in issues)


def _entries(bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return []
    return [e["resource"] for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)]


def client_failed(value: object) -> bool:
    """True when prefetch (or a server answer) carries an error OperationOutcome or is no resource.

    A Bundle may hold informational OperationOutcomes (search warnings); only errors count.
    """
    if not isinstance(value, dict):
        return True
    if value.get("resourceType") == "OperationOutcome":
        return _failed_outcome(value)
    if value.get("resourceType") == "Bundle":
        return any(r.get("resourceType") == "OperationOutcome" and _failed_outcome(r) for r in _entries(value))
    return False


def _date_part(value: object) -> str | None:
    return value[:10] if isinstance(value, str) and len(value) >= 10 else None


def in_force(coverage: Mapping[str, Any], today: dt.date) -> bool:
    """Coverage.status active and today inside Coverage.period (open ends count as open)."""
    if coverage.get("status") != "active":
        return False
    period = coverage.get("period") if isinstance(coverage.get("period"), dict) else {}
    start, end = _date_part(period.get("start")), _date_part(period.get("end"))
    iso = today.isoformat()
    return (start is None or start <= iso) and (end is None or iso <= end)


def _as_patient(value: Fetched) -> tuple[Mapping[str, Any] | None, Unavailable | None]:
    if isinstance(value, Unavailable):
        return None, value
    if value.get("resourceType") != "Patient":
        return None, Unavailable.FAILED
    return value, None


def _as_coverages(value: Fetched, today: dt.date) -> tuple[tuple[Mapping[str, Any], ...] | None, Unavailable | None]:
    if isinstance(value, Unavailable):
        return None, value
    if value.get("resourceType") != "Bundle":
        return None, Unavailable.FAILED
    found = [r for r in _entries(value) if r.get("resourceType") == "Coverage" and in_force(r, today)]
    return tuple(found), None


def read_context(
    templates: Mapping[str, str],
    request: HookRequest,
    fetcher: Fetcher | None,
    today: dt.date,
) -> PatientContext:
    """The patient context for a hook call: prefetch first, then ``fetcher`` for what is missing."""
    prefetch = request.prefetch or {}
    keys = [ContextKey(k) for k in templates if k in _KEYS]
    values: dict[ContextKey, Fetched] = {}
    wanted: dict[ContextKey, Unavailable] = {}
    for key in keys:
        if key not in prefetch:
            wanted[key] = Unavailable.NOT_PROVIDED
        elif prefetch[key] is None:
            # "null" for a read; for a search it says the same as an empty Bundle.
            values[key] = _EMPTY_SEARCH if key is ContextKey.COVERAGE else Unavailable.NOT_FOUND
        elif client_failed(prefetch[key]):
            log.info("hookInstance=%s prefetch %s: the client reports a failed fetch", request.hookInstance, key)
            wanted[key] = Unavailable.FAILED
        else:
            values[key] = prefetch[key]

    if wanted:
        context_fields = dict(request.context)  # root-level fields, extras included; no deep copy
        queries = {key: resolve_template(templates[key], context_fields) for key in wanted}
        runnable = {key: query for key, query in queries.items() if query is not None}
        fetched = fetcher.fetch(request, runnable) if fetcher and runnable else {}
        for key, reason in wanted.items():
            result = fetched.get(key, reason)
            # Our own "not provided" says less than the client's failure it was trying to repair.
            values[key] = reason if result is Unavailable.NOT_PROVIDED else result

    unavailable: dict[ContextKey, Unavailable] = {}
    patient, coverages = None, None
    if ContextKey.PATIENT in values:
        patient, problem = _as_patient(values[ContextKey.PATIENT])
        if problem:
            unavailable[ContextKey.PATIENT] = problem
    if ContextKey.COVERAGE in values:
        coverages, problem = _as_coverages(values[ContextKey.COVERAGE], today)
        if problem:
            unavailable[ContextKey.COVERAGE] = problem
    return PatientContext(patient, coverages, MappingProxyType(unavailable))


def scope_allows(scopes: str, resource_type: str, permission: str) -> bool:
    """Whether SMART scopes grant reading (``r``) or searching (``s``) ``resource_type``.

    SMART App Launch 1.0 (``patient/Coverage.read``, ``user/*.*``) and 2.0 (``patient/Coverage.rs``)
    syntax. Scopes narrowed by a query (``?category=...``) are not taken as granting the query.
    """
    for scope in scopes.split():
        context, _, rest = scope.partition("/")
        if context not in ("patient", "user", "system") or "?" in rest:
            continue
        kind, _, grant = rest.partition(".")
        if kind not in (resource_type, "*"):
            continue
        if grant in ("read", "*") or (grant and set(grant) <= set("cruds") and permission in grant):
            return True
    return False


class _Deadline:
    def __init__(self, budget_s: float) -> None:
        self.end = time.monotonic() + budget_s

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())


class FhirFetcher:
    """Queries the client's FHIR server with ``requests`` under one total time budget.

    Holds only configuration; every call builds its own session and threads, so nothing is
    shared between requests.
    """

    def __init__(self, budget_ms: int, open_server: bool) -> None:
        self.budget_s = budget_ms / 1000
        self.open_server = open_server

    def _denied(self, request: HookRequest, key: ContextKey, auth: FhirAuthorization | None) -> Unavailable | None:
        if auth is None:
            return None if self.open_server else Unavailable.NOT_PROVIDED
        if auth.patient is not None and auth.patient != request.context.patientId:
            return Unavailable.NOT_AUTHORIZED
        resource_type, permission = _ACCESS[key]
        return None if scope_allows(auth.scope, resource_type, permission) else Unavailable.NOT_AUTHORIZED

    def fetch(self, request: HookRequest, queries: Mapping[ContextKey, str]) -> dict[ContextKey, Fetched]:
        base = (request.fhirServer or "").strip().rstrip("/")
        if not base.lower().startswith(("https://", "http://")):
            return dict.fromkeys(queries, Unavailable.NOT_PROVIDED)
        auth = request.fhirAuthorization
        results: dict[ContextKey, Fetched] = {}
        runnable: dict[ContextKey, str] = {}
        for key, query in queries.items():
            denied = self._denied(request, key, auth)
            if denied:
                results[key] = denied
                log.info("hookInstance=%s fetch %s: not attempted (%s)", request.hookInstance, key, denied)
            else:
                runnable[key] = f"{base}/{query}"
        if not runnable:
            return results

        headers = {"Accept": FHIR_JSON}
        if auth is not None:
            headers["Authorization"] = f"Bearer {auth.access_token}"
        deadline = _Deadline(self.budget_s)
        started = time.monotonic()
        pool = ThreadPoolExecutor(max_workers=len(runnable), thread_name_prefix="fhir-fetch")
        try:
            futures = {key: pool.submit(_get, url, headers, deadline) for key, url in runnable.items()}
            wait(futures.values(), timeout=deadline.left())
        finally:
            # Never wait for a stuck request: it ends on its own socket timeout (the budget).
            pool.shutdown(wait=False, cancel_futures=True)
        for key, future in futures.items():
            results[key] = _settled(future)
            outcome = results[key] if isinstance(results[key], Unavailable) else "ok"
            log.info(
                "hookInstance=%s fetch %s: %s after %d ms",
                request.hookInstance,
                key,
                outcome,
                (time.monotonic() - started) * 1000,
            )
        return results


def _settled(future: Future[Fetched]) -> Fetched:
    if not future.done():
        return Unavailable.TIMEOUT
    error = future.exception()
    if error is not None:
        log.warning("fetch raised %s", type(error).__name__)
        return Unavailable.FAILED
    return future.result()


def _status_problem(status: int) -> Unavailable | None:
    if status in (401, 403):
        return Unavailable.NOT_AUTHORIZED
    if status in (404, 410):
        return Unavailable.NOT_FOUND
    return None if status == 200 else Unavailable.FAILED


def _get(url: str, headers: Mapping[str, str], deadline: _Deadline) -> Fetched:
    """One GET: no redirects (the token must not travel elsewhere), body read within the budget."""
    try:
        timeout = max(deadline.left(), 0.001)
        with requests.get(url, headers=headers, timeout=(timeout, timeout), stream=True, allow_redirects=False) as r:
            problem = _status_problem(r.status_code)
            if problem:
                log.info("fetch answered HTTP %d", r.status_code)
                return problem
            body = bytearray()
            for chunk in r.iter_content(chunk_size=16384):
                body.extend(chunk)
                if len(body) > MAX_RESPONSE_BYTES or deadline.left() <= 0:
                    return Unavailable.FAILED if deadline.left() > 0 else Unavailable.TIMEOUT
        value = json.loads(body)
    except requests.Timeout:
        return Unavailable.TIMEOUT
    except (requests.RequestException, ValueError, RecursionError) as exc:
        # The exception text can hold the URL (and so the patient id): log the type only.
        log.info("fetch failed: %s", type(exc).__name__)
        return Unavailable.FAILED
    if client_failed(value):
        return Unavailable.FAILED
    return value
