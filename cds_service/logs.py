"""Structured logging: every line is one JSON object on stderr, the app's and gunicorn's alike.

Log shippers parse JSON without per-service grok rules, and the request id that
:mod:`cds_service.telemetry` assigns is stamped on every line written while a request is handled,
so a warning from the engine can be tied to its request line. What goes into a line is chosen by
the code that logs it; nothing here adds request content (tokens, patient data) on its own.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

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


def _stamp_request_id(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if has_request_context():
            request_id = g.get(REQUEST_ID_ATTR)
            if request_id is not None:
                setattr(record, REQUEST_ID_ATTR, request_id)
        return record

    make_record.stamps_request_id = True  # type: ignore[attr-defined]
    return make_record


def json_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter())
    return handler


def configure_logging(level: str) -> None:
    """JSON lines on stderr for the root logger, unless the process already set up logging.

    Like :func:`logging.basicConfig`, a root logger that already has handlers (pytest's, an
    embedding application's) is left alone.
    """
    logging.basicConfig(level=level, handlers=[json_handler()])
    # The request id goes on every record made during a request, whichever handler writes it;
    # a record factory (not a handler filter) also reaches handlers others install.
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "stamps_request_id", False):
        logging.setLogRecordFactory(_stamp_request_id(factory))
