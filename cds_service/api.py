"""CDS Hooks HTTP endpoints: discovery and the hook call (CDS Hooks 2.0 sections 'Discovery' and
'Calling a CDS Service'). Input becomes typed models here; everything after is the engine's."""

from __future__ import annotations

import json

from flask import Blueprint, Response, g, jsonify, request

from cds_service import jsonio
from cds_service.errors import BadRequest, NotFound
from cds_service.feedback import FeedbackRequest
from cds_service.hookrequest import parse_hook_request
from cds_service.security import authenticated
from cds_service.services import SERVICES, SERVICES_BY_ID, ServiceDefinition
from cds_service.telemetry import feedback_received, hook_evaluated
from cds_service.validation import parse_model
from cds_service.web import audit_trail, base_url, engine, fhir_fetcher, settings

bp = Blueprint("api", __name__, url_prefix="/cds-services")


def read_json_body() -> object:
    """The decoded request body; malformed input is a 400 naming the problem, never a 500."""
    raw = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    limit = settings().max_json_depth
    too_deep = f"the JSON body is nested more than {limit} levels deep"
    if not raw or raw.isspace():
        raise BadRequest("the request body is empty; expected a JSON object")
    try:
        body, utf8 = jsonio.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 encoded JSON") from None
    except RecursionError:
        raise BadRequest(too_deep) from None
    except ValueError:
        # Python refuses integers of more than 4300 digits (int_max_str_digits), a guard against
        # quadratic-time conversion; json.loads raises a plain ValueError for them.
        raise BadRequest("the JSON body holds a number too long to read") from None
    if jsonio.nesting_exceeds(utf8, limit):
        raise BadRequest(too_deep)
    return body


def _service(service_id: str) -> ServiceDefinition:
    service = SERVICES_BY_ID.get(service_id)
    if service is None:
        raise NotFound(f"no CDS Service with id '{service_id}'; see GET /cds-services")
    return service


# Fixed for the life of the process: the services are declared in code.
_DISCOVERY = {"services": [service.discovery() for service in SERVICES]}


@bp.get("")
def discovery() -> Response:
    return jsonify(_DISCOVERY)


@bp.post("/<service_id>")
@authenticated
def call_service(service_id: str) -> Response:
    service = _service(service_id)
    hook_request = parse_hook_request(read_json_body())
    audit = audit_trail()
    # base_url goes in as a function: it is worked out only when there is a card.
    evaluation = engine().evaluate(service, hook_request, base_url, fhir_fetcher(), audit.unseen)
    hook_evaluated(hook_request, evaluation)
    # Queued for the background writer: the response does not wait for the database.
    audit.record_hook_call(service, hook_request, evaluation, g.get("auth_client"))
    return jsonify(evaluation.response)


@bp.post("/<service_id>/feedback")
@authenticated
def feedback(service_id: str) -> Response:
    """CDS Hooks 2.0 "Feedback". The spec defines no response body; 200 with a count says it landed."""
    service = _service(service_id)
    items = parse_model(FeedbackRequest, read_json_body()).feedback
    received = audit_trail().record_feedback(service, items, g.get("auth_client"))
    feedback_received(service.id, items)
    return jsonify({"received": received})
