"""Prometheus metrics, served at ``GET /metrics``.

Under gunicorn every worker is its own process, so ``cds-service serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before this module is imported: each worker then
writes its samples to memory-mapped files there, and a scrape (answered by any one worker) adds
up every worker's files, including those of workers that have exited. Without that variable
(tests, ``flask run``) the metrics live in the process. Updating a metric is a dictionary look-up
and an add into shared memory, so the request path stays cheap.

Label values are always drawn from closed sets (route names, service ids, policy ids, enum
members, status codes), never from request content, so a client cannot grow the series count.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from enum import Enum, StrEnum

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from cds_service.policy import Policy

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter(
    "cds_http_requests",
    "HTTP requests answered, by route (Flask endpoint), CDS Service id and status code.",
    ["endpoint", "service", "status"],
)
LATENCY = Histogram(
    "cds_http_request_duration_seconds",
    "Time from the start of request handling to the response, by route, CDS Service id and status.",
    ["endpoint", "service", "status"],
)
CARDS = Counter("cds_cards_issued", "Cards returned to CDS clients, by policy.", ["policy"])
FEEDBACK = Counter(
    "cds_feedback", "CDS Hooks feedback items received, by CDS Service id and outcome.", ["service", "outcome"]
)
AUTH_FAILURES = Counter("cds_auth_failures", "Requests refused by client authentication, by reason.", ["reason"])
POLICY_LOADED = Gauge(
    "cds_policy_loaded",
    "1 for each policy (id and version) that a live worker serves.",
    ["policy", "version"],
    # Only live workers count: after a reload, the old workers' versions disappear.
    multiprocess_mode="livemax",
)


# The labelled series per (endpoint, service, status), looked up once: ``labels()`` takes a lock
# and rebuilds its key on every call. Bounded, since every label comes from a closed set.
_REQUEST_SERIES: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def count_request(endpoint: str, service: str, status: int, seconds: float) -> None:
    key = (endpoint, service, status)
    series = _REQUEST_SERIES.get(key)
    if series is None:
        code = str(status)
        series = (REQUESTS.labels(endpoint, service, code), LATENCY.labels(endpoint, service, code))
        _REQUEST_SERIES[key] = series
    series[0].inc()
    series[1].observe(seconds)


def count_cards(policy_ids: Iterable[str]) -> None:
    for policy_id in policy_ids:
        CARDS.labels(policy_id).inc()


def count_feedback(service: str, outcome: StrEnum) -> None:
    FEEDBACK.labels(service, outcome.value).inc()


def count_auth_failure(reason: Enum) -> None:
    """One request refused by authentication; the label is the member's name (``expired``)."""
    AUTH_FAILURES.labels(reason.name.lower()).inc()


def mark_policies_loaded(policies: Iterable[Policy]) -> None:
    """Called once in each gunicorn worker after it starts serving."""
    for policy in policies:
        POLICY_LOADED.labels(policy.id, policy.version).set(1)


def exposition() -> tuple[bytes, str]:
    """The scrape body and its content type: every worker's samples under gunicorn."""
    if os.environ.get(MULTIPROC_ENV):
        # prometheus-client's multiprocess recipe: a fresh registry per scrape, never the global one.
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
