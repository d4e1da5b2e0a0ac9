"""Typed errors and the one place that maps them to HTTP responses.

Every failure a client can cause is raised as a :class:`ServiceError` subclass somewhere in the
pipeline; :func:`register_error_handlers` turns it (and any werkzeug HTTP error, such as 404, 405
and 413 raised by routing or body limits) into a FHIR ``OperationOutcome`` JSON body. CDS Hooks 2.0
leaves error bodies open ("CDS Services MAY return other HTTP statuses", section "HTTP Response");
the 3.0 ballot and Da Vinci CRD (hook-13) ask for an OperationOutcome, so clients that already parse
FHIR errors need nothing new. An API route therefore never answers with an HTML error page.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# FHIR IssueType codes (http://hl7.org/fhir/issue-type) for each status we answer with.
_ISSUE_TYPE = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    413: "too-costly",
    415: "not-supported",
    500: "exception",
}


class ServiceError(Exception):
    """A failure with a definite HTTP status and a message that is safe to show the caller."""

    status: ClassVar[int] = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(ServiceError):
    status = 400


class Unauthorized(ServiceError):
    """A missing or invalid client JWT. RFC 6750 section 3: answer with a Bearer challenge."""

    status = 401

    def headers(self) -> dict[str, str]:
        description = self.message.replace('"', "'")
        return {
            "WWW-Authenticate": f'Bearer realm="cds-services", error="invalid_token", error_description="{description}"'
        }


class NotFound(ServiceError):
    status = 404


def operation_outcome(status: int, message: str, field: str | None = None) -> dict[str, object]:
    """An OperationOutcome with one error issue; ``expression`` names the offending field."""
    issue: dict[str, object] = {
        "severity": "error",
        "code": _ISSUE_TYPE.get(status, "processing"),
        "diagnostics": message,
    }
    if field:
        issue["expression"] = [field]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def error_response(status: int, message: str, field: str | None = None) -> Response:
    response = jsonify(operation_outcome(status, message, field))
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def _service_error(error: ServiceError) -> Response:
        response = error_response(error.status, error.message, error.field)
        response.headers.update(error.headers())
        return response

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        response = error_response(status, error.description or error.name)
        # Keep headers werkzeug attaches for this status, e.g. ``Allow`` on a 405.
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        # A bug, not a client error. Log the type and traceback only: the exception text may echo
        # request content (patient data) back.
        log.error("unhandled %s", type(error).__name__, exc_info=error)
        return error_response(500, "internal error; the request was not processed")
