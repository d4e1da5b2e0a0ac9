"""Structured logging: every line is one JSON object on stderr, the app's and gunicorn's alike.

Log shippers parse JSON without per-service grok rules, and the request id that
:mod:`cds_service.telemetry` assigns is stamped on every line written while a request is handled,
so a warning from the engine can be tied to its request line. What goes into a line is chosen by
the code that logs it; nothing here adds request content (tokens, patient data) on its own.
"""

from __future__ import annotations

import logging
import sys

from flask import g, has_request_context
from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_ATTR = "request_id"


def json_formatter() -> logging.Formatter:
    """``{"level": ..., "logger": ..., "message": ..., <extra fields>, "time": <ISO 8601, UTC>}``."""
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
    )


class RequestIdFilter(logging.Filter):
    """Adds the current request's id to records logged inside a Flask request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            request_id = g.get(REQUEST_ID_ATTR)
            if request_id is not None:
                setattr(record, REQUEST_ID_ATTR, request_id)
        return True


def json_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter())
    handler.addFilter(RequestIdFilter())
    return handler


def configure_logging(level: str) -> None:
    """JSON lines on stderr for the root logger, unless the process already set up logging.

    Like :func:`logging.basicConfig`, a root logger that already has handlers (pytest's, an
    embedding application's) is left alone, apart from the level.
    """
    logging.basicConfig(level=level, handlers=[json_handler()])
    logging.getLogger().setLevel(level)
