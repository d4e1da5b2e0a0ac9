"""The OpenAPI 3.1 document of the whole HTTP surface, served at ``GET /openapi.json``.

Generated at start-up from the pydantic models that validate requests (``HookRequest``,
``FeedbackRequest``) and the ones that describe responses (:mod:`cds_service.schemas`), from the
service definitions (the hook endpoint's ``service_id`` values) and from the loaded policies (the
evidence pages' ``policy_id`` examples), so it cannot drift from what the server does. OpenAPI 3.1
schemas are JSON Schema 2020-12, which is what pydantic emits, so the model schemas are used as
they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from cds_service.feedback import FeedbackRequest
from cds_service.hookrequest import HookRequest
from cds_service.policy import Policy
from cds_service.schemas import (
    CardsResponse,
    DiscoveryResponse,
    EvidenceDocument,
    FeedbackReceived,
    Health,
    OperationOutcome,
    Readiness,
)
from cds_service.services import SERVICES, OrderScope

OPENAPI_KEY = "cds_openapi"
_REQUEST_ID = "X-Request-ID"
_JWT = "cdsClientJwt"
_JWT_DESCRIPTION = (
    "A JWT the CDS client signs with a key from its JWK Set (iss, aud = the URL called, exp, iat, jti), "
    "from a client in the trusted-clients file."
)

_MODELS: tuple[tuple[type[BaseModel], JsonSchemaMode], ...] = (
    (HookRequest, "validation"),
    (FeedbackRequest, "validation"),
    (DiscoveryResponse, "serialization"),
    (CardsResponse, "serialization"),
    (FeedbackReceived, "serialization"),
    (OperationOutcome, "serialization"),
    (EvidenceDocument, "serialization"),
    (Health, "serialization"),
    (Readiness, "serialization"),
)
_MODES: dict[type[BaseModel], JsonSchemaMode] = dict(_MODELS)

_DESCRIPTION = """\
CDS Hooks 2.0 service (order-select, order-sign) that answers with cards for payer medical \
policies, such as SURG.00126 (irreversible electroporation).

Every error is a FHIR `OperationOutcome` in JSON. A path not listed here (such as an unknown \
CDS Service id) is answered with 404, a method a path does not list with 405 and an `Allow` \
header. Every response carries `X-Request-ID`: the request's own header when \
it looks like an id, otherwise a fresh UUID."""


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _response(description: str, media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {_REQUEST_ID: _ref("headers", _REQUEST_ID)},
        "content": {media_type: {"schema": schema}},
    }


def _operation(
    operation_id: str,
    summary: str,
    tag: str,
    responses: dict[str, Any],
    *,
    parameters: Sequence[dict[str, Any]] = (),
    body: dict[str, Any] | None = None,
    authenticated: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "parameters": [_ref("parameters", _REQUEST_ID), *parameters],
        "responses": responses,
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if authenticated:
        operation["security"] = [{_JWT: []}]
    return operation


def build_document(policies: Sequence[Policy], base_url: str | None, *, authenticated: bool) -> dict[str, Any]:
    """The document for this configuration; ``authenticated``: trusted clients are configured."""
    refs, definitions = models_json_schema(_MODELS, ref_template="#/components/schemas/{model}")

    def schema(model: type[BaseModel]) -> dict[str, Any]:
        return dict(refs[(model, _MODES[model])])

    def json_body(description: str, model: type[BaseModel]) -> dict[str, Any]:
        return _response(description, "application/json", schema(model))

    policy_id = {
        "name": "policy_id",
        "in": "path",
        "required": True,
        "description": "A policy id, as in a card's links.",
        # The policy file schema's own rule for ids, with the loaded ids as examples.
        "schema": {
            **definitions["$defs"]["EvidenceDocument"]["properties"]["id"],
            "examples": [policy.id for policy in policies],
        },
    }
    bad_request = _ref("responses", "BadRequest")
    not_found = _ref("responses", "NotFound")
    too_large = _ref("responses", "PayloadTooLarge")

    hook_request = schema(HookRequest)
    # order-select answers 400 without context.selections (the service's hook decides, not the
    # request's "hook" field), so each service gets its own path and body schema.
    selections_required = {
        "allOf": [
            hook_request,
            {"properties": {"context": {"required": ["selections"], "properties": {"selections": {"type": "array"}}}}},
        ]
    }
    paths: dict[str, Any] = {
        "/cds-services": {
            "get": _operation(
                "discovery",
                "CDS Hooks discovery: the services this server offers",
                "CDS Hooks",
                {"200": json_body("The CDS Services", DiscoveryResponse)},
            )
        },
        "/evidence/{policy_id}": {
            "get": _operation(
                "evidencePage",
                "The evidence summary a card links to (HTML, no script)",
                "Evidence",
                {"200": _response("The evidence page", "text/html", {"type": "string"}), "404": not_found},
                parameters=[policy_id],
            )
        },
        "/evidence/{policy_id}.json": {
            "get": _operation(
                "evidenceDocument",
                "The evidence summary as JSON",
                "Evidence",
                {"200": json_body("The evidence summary", EvidenceDocument), "404": not_found},
                parameters=[policy_id],
            )
        },
        "/healthz": {
            "get": _operation(
                "health", "Liveness: the process answers", "Operations", {"200": json_body("Alive", Health)}
            )
        },
        "/readyz": {
            "get": _operation(
                "readiness",
                "Readiness: every registered check passes (policies loaded, ...)",
                "Operations",
                {
                    "200": json_body("Ready to serve", Readiness),
                    "503": json_body("A check failed; send no traffic here", Readiness),
                },
            )
        },
        "/metrics": {
            "get": _operation(
                "metrics",
                "Prometheus metrics (text exposition format), summed over all workers",
                "Operations",
                {"200": _response("Metrics", "text/plain", {"type": "string"})},
            )
        },
        "/openapi.json": {
            "get": _operation(
                "openapi",
                "This document",
                "Operations",
                {
                    "200": _response(
                        "The OpenAPI 3.1 document",
                        "application/json",
                        {"type": "object", "required": ["openapi", "info", "paths"]},
                    )
                },
            )
        },
    }
    # Hooks and feedback: what any client error looks like; 401 only when authentication is on.
    refusals = {"400": bad_request, "413": too_large}
    if authenticated:
        refusals["401"] = _ref("responses", "Unauthorized")
    for service in SERVICES:
        name = "".join(word.capitalize() for word in service.id.split("-"))
        paths[f"/cds-services/{service.id}"] = {
            "post": _operation(
                f"call{name}",
                f"{service.title}: call with an {service.hook.value} request",
                "CDS Hooks",
                {"200": json_body("Cards; an empty list when no policy applies", CardsResponse), **refusals},
                body=selections_required if service.scope is OrderScope.SELECTIONS else hook_request,
                authenticated=authenticated,
            )
        }
        paths[f"/cds-services/{service.id}/feedback"] = {
            "post": _operation(
                f"feedback{name}",
                f"{service.title}: feedback on its cards",
                "CDS Hooks",
                {"200": json_body("How many feedback items were received", FeedbackReceived), **refusals},
                body=schema(FeedbackRequest),
                authenticated=authenticated,
            )
        }

    def error(description: str) -> dict[str, Any]:
        return json_body(description, OperationOutcome)

    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "cds-service", "version": version("cds-service"), "description": _DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": definitions["$defs"],
            "parameters": {
                _REQUEST_ID: {
                    "name": _REQUEST_ID,
                    "in": "header",
                    "required": False,
                    "description": "A caller's id for this request, echoed back and written to the log.",
                    "schema": {"type": "string"},
                }
            },
            "headers": {
                _REQUEST_ID: {
                    "required": True,
                    "description": "The id this request was logged under.",
                    "schema": {"type": "string", "minLength": 1},
                }
            },
            "responses": {
                "BadRequest": error("Malformed JSON, or a request that breaks the CDS Hooks envelope"),
                "NotFound": error("No such policy"),
                "PayloadTooLarge": error("The request body is over the configured limit"),
            },
        },
    }
    if authenticated:
        components = document["components"]
        # CDS Hooks 2.0 "Trusting CDS Clients": a JWT signed by the client, as a bearer token.
        components["securitySchemes"] = {
            _JWT: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": _JWT_DESCRIPTION}
        }
        unauthorized = error("A missing or invalid client JWT; WWW-Authenticate says why")
        unauthorized["headers"]["WWW-Authenticate"] = {"required": True, "schema": {"type": "string"}}
        components["responses"]["Unauthorized"] = unauthorized
    if base_url:
        document["servers"] = [{"url": base_url}]
    return document
