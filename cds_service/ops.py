"""Operator endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document.

``/healthz`` answers as long as a worker can run Python: an orchestrator restarts the process
when it stops answering. ``/readyz`` runs every readiness check registered on the app (policies
loaded, database reachable) and answers 503 while any fails, so a load balancer sends no traffic
to an instance that cannot do its job. (Hook calls still get their cards while the database is
down, their audit records wait in the spool; readiness reports the outage, it does not hide it.)
Checks are a small registry in ``app.extensions``; a component adds its own with one line::

    add_readiness_check(app, "database", lambda: database.ping())
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from flask import Blueprint, Flask, Response, current_app, jsonify

from cds_service.metrics import exposition
from cds_service.openapi import OPENAPI_KEY, build_document
from cds_service.policy import describe_policies
from cds_service.schemas import CheckStatus, ReadinessStatus
from cds_service.web import audit_trail, engine, settings

log = logging.getLogger(__name__)
bp = Blueprint("ops", __name__)

READINESS_KEY = "cds_readiness"


class NotReady(Exception):
    """Raised by a readiness probe; the message is shown to callers of ``/readyz``."""


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    """``probe`` returns a short, non-secret detail when ready and raises when not.

    It runs inside the ``/readyz`` request (an app context is active) and should be quick:
    a probe that talks to another system sets its own short timeout.
    """

    name: str
    probe: Callable[[], str]


def add_readiness_check(app: Flask, name: str, probe: Callable[[], str]) -> None:
    checks = cast(list[ReadinessCheck], app.extensions.setdefault(READINESS_KEY, []))
    if any(check.name == name for check in checks):
        raise ValueError(f"readiness check {name!r} is already registered")
    checks.append(ReadinessCheck(name, probe))


def _policies_loaded() -> str:
    policies = engine().policies
    if not policies:
        raise NotReady("no policies loaded")
    return describe_policies(policies)


def _database_reachable() -> str:
    # The kind of database only: its location would tell any caller where it lives.
    store = audit_trail().store
    if not store.ping():
        raise NotReady("database unreachable; audit records go to the local spool")
    return f"{store.engine.url.get_backend_name()} reachable"


def _run(check: ReadinessCheck) -> dict[str, str]:
    try:
        detail = check.probe()
    except NotReady as exc:
        return {"name": check.name, "status": CheckStatus.FAIL.value, "detail": str(exc)}
    except Exception as exc:  # a failing probe means "not ready", never a 500
        # Only the type: the text of, say, a database error can carry a connection string.
        log.warning("readiness check %s failed: %s", check.name, type(exc).__name__)
        return {"name": check.name, "status": CheckStatus.FAIL.value, "detail": type(exc).__name__}
    return {"name": check.name, "status": CheckStatus.PASS.value, "detail": detail}


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    results = [_run(check) for check in current_app.extensions[READINESS_KEY]]
    ready = all(result["status"] == CheckStatus.PASS.value for result in results)
    status = ReadinessStatus.READY if ready else ReadinessStatus.NOT_READY
    response = jsonify({"status": status.value, "checks": results})
    response.status_code = 200 if ready else 503
    return response


@bp.get("/metrics")
def metrics() -> Response:
    body, content_type = exposition()
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(current_app.extensions[OPENAPI_KEY])


def init_app(app: Flask) -> None:
    """Register the endpoints and the built-in readiness check; build the OpenAPI document once."""
    with app.app_context():
        config = settings()
        document = build_document(engine().policies, config.base_url, authenticated=config.trusted_clients is not None)
        app.extensions[OPENAPI_KEY] = document
    add_readiness_check(app, "policies", _policies_loaded)
    add_readiness_check(app, "database", _database_reachable)
    app.register_blueprint(bp)
