"""The CDS Hooks request envelope for order-select and order-sign, as pydantic models.

Strict on the envelope, lenient on clinical content: the fields CDS Hooks 2.0 makes REQUIRED
("HTTP Request" and the order-select / order-sign context tables) are checked and a missing or
mistyped one is a 400 naming the field, while the FHIR resources inside ``draftOrders`` stay plain
JSON for the matching engine (they are FHIR-validated separately, and only logged when invalid).
Unknown fields are ignored, as the spec's extension rules and CRD (found-33) require.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from cds_service.errors import BadRequest
from cds_service.validation import parse_model

NonEmpty = Annotated[str, StringConstraints(min_length=1)]


class Hook(StrEnum):
    ORDER_SELECT = "order-select"
    ORDER_SIGN = "order-sign"


class Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


def _object_or_none(value: object) -> dict[str, Any] | None:
    """The resource exactly as decoded. pydantic's own ``dict`` validation would rebuild every
    resource of every call, for orders that are read only, never changed."""
    if value is None or isinstance(value, dict):
        return value
    raise PydanticCustomError("dict_type", "Input should be a valid dictionary")


# A FHIR resource as JSON: an object, passed through as it is.
JsonObject = Annotated[
    dict[str, Any] | None, PlainValidator(_object_or_none, json_schema_input_type=dict[str, Any] | None)
]


class BundleEntry(Lenient):
    # An entry with no resource carries nothing to evaluate; skip, not fail.
    resource: JsonObject = None


class DraftOrders(Lenient):
    """A Bundle of draft orders. The reference sandbox omits ``Bundle.type``, so it is optional."""

    resourceType: Literal["Bundle"]
    type: str | None = None
    entry: list[BundleEntry] = Field(default_factory=list)


class OrderContext(Lenient):
    userId: NonEmpty
    patientId: NonEmpty
    encounterId: str | None = None
    # REQUIRED for order-select, not defined for order-sign; which one applies is the service's
    # decision (see HookRequest.require_selections), not the request's ``hook`` field.
    selections: list[NonEmpty] | None = None
    draftOrders: DraftOrders


_EXACT = 2**53


def _whole_number(value: object) -> object:
    """A JSON number with no fraction (``3600.0``) as the integer it is, where a float holds that
    integer exactly; anything else unchanged (and refused by the strict integer check)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT:
        return int(value)
    return value


class FhirAuthorization(Lenient):
    # Only the shape is checked here; the token is never logged or echoed (CDS Hooks 2.0
    # "FHIR Resource Access": treat it as transient).
    access_token: NonEmpty
    token_type: NonEmpty
    # An integer, not "3600" or true: what the spec types (and the OpenAPI document says) is taken.
    # JSON has one number type, so 3600.0 is that integer too (as JSON Schema counts it). Bounded
    # by 2**53, the integers every JSON parser reads exactly (JavaScript's safe integers; orjson
    # reads literals beyond 64 bits as floats), far beyond any token lifetime in seconds.
    expires_in: Annotated[int, BeforeValidator(_whole_number)] = Field(strict=True, ge=-_EXACT, le=_EXACT)
    scope: NonEmpty
    subject: NonEmpty
    patient: str | None = None


class HookRequest(Lenient):
    # Either order hook is accepted on either service (the reference sandbox stamps the screen's
    # hook on every call); anything else is not a call this server can answer.
    hook: Hook
    hookInstance: NonEmpty
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: OrderContext
    prefetch: dict[str, Any] | None = None
    extension: dict[str, Any] | None = None

    # The rule below, restated in JSON Schema for the OpenAPI document (cds_service.openapi).
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"required": ["fhirAuthorization"], "properties": {"fhirAuthorization": {"type": "object"}}},
            "then": {"required": ["fhirServer"], "properties": {"fhirServer": {"type": "string", "minLength": 1}}},
        }
    )

    @model_validator(mode="after")
    def _fhir_server_with_authorization(self) -> HookRequest:
        # CDS Hooks 2.0 "HTTP Request": "If fhirAuthorization is provided, this field is REQUIRED."
        if self.fhirAuthorization is not None and not self.fhirServer:
            raise ValueError("fhirServer is required when fhirAuthorization is given")
        return self

    def require_selections(self) -> list[str]:
        if self.context.selections is None:
            raise BadRequest("context.selections is required for order-select", field="context.selections")
        return self.context.selections


def parse_hook_request(body: object) -> HookRequest:
    """Validate a decoded JSON body, raising a 400 that names the first bad field."""
    return parse_model(HookRequest, body)
