"""One JSON log line and one set of metric updates per request, with a request id.

The request id is the caller's ``X-Request-ID`` when it looks like an id (so a trace can follow a
call from the EHR through this service), otherwise a fresh UUID; either way it is echoed in the
response's ``X-Request-ID``. Views add what they learnt (the hookInstance, how many cards) with
:func:`hook_evaluated` and :func:`feedback_received`; the line itself is written once, after the
response is built, whatever the outcome. It carries ids, counts and status, never a token, a
request body or a patient resource.

Health, readiness and metrics probes are logged at DEBUG: an orchestrator polls them every few
seconds and they would drown the INFO log.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from flask import Flask, Response, g, request

from cds_service.engine import Evaluation
from cds_service.feedback import FeedbackItem
from cds_service.hookrequest import HookRequest
from cds_service.logs import REQUEST_ID_ATTR
from cds_service.metrics import count_cards, count_feedback, count_request
from cds_service.services import SERVICES_BY_ID

log = logging.getLogger("cds_service.request")

REQUEST_ID_HEADER = "X-Request-ID"
# The same header as WSGI names it in the environ (PEP 3333: HTTP_, upper case, "-" as "_").
_REQUEST_ID_ENVIRON = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")
# Letters, digits and the punctuation of common id formats (UUIDs, W3C trace ids, base64url);
# anything else (spaces, quotes, control characters, 200 KiB of junk) is replaced, not echoed.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~:@+=/-]{0,127}")
_PROBE_ENDPOINTS = frozenset({"ops.healthz", "ops.readyz", "ops.metrics"})
_UNROUTED = "unrouted"
_RECORD_ATTR = "cds_request_record"
# Longest path written to the log; a longer one is cut (the router already refused it).
_MAX_LOGGED_PATH = 256


@dataclass(slots=True)
class RequestRecord:
    """What the request line reports beyond method, path and status; filled in by the views."""

    started: float
    hook: str | None = None
    hook_instance: str | None = None
    examined: int | None = None
    cards: int | None = None
    # Orders matched but not warned about again (shown at order-select for the same decision).
    already_shown: int | None = None
    feedback: dict[str, int] = field(default_factory=dict)


def request_id_from(header: str | None) -> str:
    if header is not None and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return str(uuid.uuid4())


def _record() -> RequestRecord:
    return cast(RequestRecord, g.get(_RECORD_ATTR))


def hook_evaluated(hook_request: HookRequest, evaluation: Evaluation) -> None:
    """Note a finished hook call on the request line and count its cards by policy."""
    record = _record()
    record.hook = hook_request.hook.value
    record.hook_instance = hook_request.hookInstance
    record.examined = evaluation.examined
    record.cards = len(evaluation.response["cards"])
    record.already_shown = len(evaluation.suppressed)
    count_cards(issued.policy.id for issued in evaluation.issued)


def feedback_received(service_id: str, items: Sequence[FeedbackItem]) -> None:
    record = _record()
    for item in items:
        outcome = item.outcome.value
        record.feedback[outcome] = record.feedback.get(outcome, 0) + 1
        count_feedback(service_id, item.outcome)


def _start() -> None:
    # The WSGI environ directly: building werkzeug's header view costs more than the rest of this.
    setattr(g, REQUEST_ID_ATTR, request_id_from(request.environ.get(_REQUEST_ID_ENVIRON)))
    setattr(g, _RECORD_ATTR, RequestRecord(started=time.perf_counter()))


def _finish(response: Response) -> Response:
    record = _record()
    seconds = time.perf_counter() - record.started
    response.headers[REQUEST_ID_HEADER] = g.get(REQUEST_ID_ATTR)
    endpoint = request.endpoint or _UNROUTED
    view_args = request.view_args
    service_id = view_args.get("service_id") if view_args else None
    # Only ids this server defines become labels; an unknown id is a 404 and is not echoed.
    service = service_id if service_id in SERVICES_BY_ID else ""
    status = response.status_code
    count_request(endpoint, service, status, seconds)

    fields: dict[str, object] = {
        "method": request.method,
        "path": request.path[:_MAX_LOGGED_PATH],
        "endpoint": endpoint,
        "status": status,
        "latency_ms": round(seconds * 1000, 3),
    }
    if service:
        fields["service"] = service
    if record.hook is not None:
        fields["hook"] = record.hook
        fields["hookInstance"] = record.hook_instance
        fields["examined"] = record.examined
        fields["cards"] = record.cards
        fields["already_shown"] = record.already_shown
    if record.feedback:
        fields["feedback"] = record.feedback
    log.log(logging.DEBUG if endpoint in _PROBE_ENDPOINTS else logging.INFO, "request", extra=fields)
    return response


def init_app(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)
