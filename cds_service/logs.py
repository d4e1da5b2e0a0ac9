"""Structured logging: every line is one JSON object on stderr, the app's and gunicorn's alike.

Log shippers parse JSON without per-service grok rules, and the request id that
:mod:`cds_service.telemetry` assigns is stamped on every line written while a request is handled,
so a warning from the engine can be tied to its request line. What goes into a line is chosen by
the code that logs it; nothing here adds request content (tokens, patient data) on its own.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import orjson
from flask import g, has_request_context

REQUEST_ID_ATTR = "request_id"

# What every LogRecord carries; any other attribute came from the caller's ``extra=`` and is a field.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


# Neither a record attribute nor a key the line sets itself may come from ``extra=``.
_RESERVED = _RECORD_ATTRS | {"level", "logger", "time"}


def _json_default(value: object) -> str:
    """Fields JSON has no type for: dates as ISO 8601, anything else as its ``str``."""
    return value.isoformat() if isinstance(value, dt.date | dt.time) else str(value)


class JsonLineFormatter(logging.Formatter):
    """``{"level": ..., "logger": ..., "message": ..., <extra fields>, "time": <ISO 8601, UTC>}``.

    Written out rather than taken from python-json-logger: this runs once per request (the
    request line), and under load the general-purpose formatter spent about 25 µs of each call on
    renames, defaults and its own encoder (bench/RESULTS.md). Here it is one pass over the record
    and orjson. Lines stay pure ASCII, as ``json.dumps`` writes them, so that no stream encoding
    can garble them: the rare line with other characters (or that orjson refuses, such as a lone
    surrogate) is written by ``json.dumps``. Exceptions and stacks go under ``exc_info`` and
    ``stack_info``.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"level": record.levelname, "logger": record.name, "message": record.getMessage()}
        line.update({key: value for key, value in record.__dict__.items() if key not in _RESERVED})
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        line["time"] = dt.datetime.fromtimestamp(record.created, dt.UTC)
        try:
            encoded = orjson.dumps(line, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
            if encoded.isascii():
                return encoded.decode("ascii")
        except orjson.JSONEncodeError:
            pass
        return json.dumps(line, default=_json_default, separators=(",", ":"))


def json_formatter() -> logging.Formatter:
    return JsonLineFormatter()


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


def skip_unused_record_fields() -> None:
    """Stop logging from working out what no JSON line shows: for the server's own process.

    The switches the logging HOWTO lists under "Optimization": no caller look-up (a walk up the
    stack for every record), no thread, process or multiprocessing names. Together they were
    about 15 µs of each request's log line under load (bench/RESULTS.md). Without the caller
    look-up, logging also leaves out ``stack_info``; nothing in the service asks for it.
    """
    logging._srcfile = None  # type: ignore[attr-defined]  # documented, though underscored
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
