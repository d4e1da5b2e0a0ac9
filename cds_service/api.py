"""CDS Hooks HTTP endpoints: discovery and the hook call (CDS Hooks 2.0 sections 'Discovery' and
'Calling a CDS Service'). Input becomes typed models here; everything after is the engine's."""

from __future__ import annotations

import json
import logging

from flask import Blueprint, Response, jsonify, request

from cds_service.errors import BadRequest, NotFound
from cds_service.feedback import FeedbackRequest
from cds_service.hookrequest import parse_hook_request
from cds_service.services import SERVICES, SERVICES_BY_ID, ServiceDefinition
from cds_service.validation import parse_model
from cds_service.web import base_url, engine

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/cds-services")


def read_json_body() -> object:
    """The decoded request body; malformed input is a 400 naming the problem, never a 500."""
    raw = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    if not raw.strip():
        raise BadRequest("the request body is empty; expected a JSON object")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 encoded JSON") from None
    except RecursionError:
        raise BadRequest("the JSON body is nested too deeply") from None


def _service(service_id: str) -> ServiceDefinition:
    service = SERVICES_BY_ID.get(service_id)
    if service is None:
        raise NotFound(f"no CDS Service with id '{service_id}'; see GET /cds-services")
    return service


@bp.get("")
def discovery() -> Response:
    return jsonify({"services": [service.discovery() for service in SERVICES]})


@bp.post("/<service_id>")
def call_service(service_id: str) -> Response:
    service = _service(service_id)
    hook_request = parse_hook_request(read_json_body())
    evaluation = engine().evaluate(service, hook_request, base_url())
    log.info(
        "service=%s hookInstance=%s examined=%d cards=%d",
        service.id,
        hook_request.hookInstance,
        evaluation.examined,
        len(evaluation.response["cards"]),
    )
    return jsonify(evaluation.response)


@bp.post("/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    """CDS Hooks 2.0 "Feedback". The spec defines no response body; 200 with a count says it landed."""
    service = _service(service_id)
    items = parse_model(FeedbackRequest, read_json_body()).feedback
    for item in items:
        log.info("service=%s feedback card=%s outcome=%s", service.id, item.card, item.outcome.value)
    return jsonify({"received": len(items)})
