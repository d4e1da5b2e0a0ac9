"""CDS Hooks 2.0 feedback (section "Feedback"): the request model.

``{"feedback": [{card, outcome, acceptedSuggestions, overrideReason, outcomeTimestamp}]}``.
The spec's conditional rules are enforced: ``acceptedSuggestions`` is required for ``accepted``,
and an ``overrideReason`` must carry a reason or a comment (the 3.0 ballot's cds-fb-3 makes that
explicit). The response body is not specified by CDS Hooks; this service answers 200 with a count.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Annotated

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

# Card and suggestion uuids, reason codes: what this service hands out is far shorter; the bound
# keeps a hostile client from filling the feedback table with megabyte "ids".
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]


# RFC 3339 section 5.6 "date-time" (upper or lower case T and Z, seconds required), in the years
# 1900 to 2999. pydantic alone would also take Unix times (0, "1700000000") and date-times without
# seconds, and a year-1 time with a positive offset has no UTC equivalent Python can represent.
# The OpenAPI document states the same pattern.
_RFC3339 = (
    r"^(19|2[0-9])[0-9]{2}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"  # full-date "T" partial-time
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"  # time-offset
)
_RFC3339_MATCH = re.compile(_RFC3339).fullmatch


def _rfc3339_string(value: object) -> object:
    if not (isinstance(value, str) and _RFC3339_MATCH(value)):
        raise ValueError(
            "must be an RFC 3339 date-time with a timezone offset, such as 2026-11-26T14:30:00Z (years 1900 to 2999)"
        )
    return value


Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339_string),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": _RFC3339}),
]


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    OVERRIDDEN = "overridden"


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class AcceptedSuggestion(_Lenient):
    id: Identifier


class ReasonCoding(_Lenient):
    # The sandbox sends {code, system} without display; display is only REQUIRED in the card.
    code: Identifier
    system: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    display: str | None = None


class OverrideReason(_Lenient):
    reason: ReasonCoding | None = None
    userComment: str | None = None

    # The rule below, restated in JSON Schema for the OpenAPI document (cds_service.openapi).
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["reason"], "properties": {"reason": {"type": "object"}}},
                {"required": ["userComment"], "properties": {"userComment": {"type": "string", "minLength": 1}}},
            ]
        }
    )

    @model_validator(mode="after")
    def _something_said(self) -> OverrideReason:
        if self.reason is None and not self.userComment:
            raise ValueError("overrideReason needs a reason or a userComment")
        return self


class FeedbackItem(_Lenient):
    card: Identifier
    outcome: Outcome
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    # RFC 3339 section 5.6 date-time with an offset ("1985-04-12T23:20:50.52Z").
    outcomeTimestamp: Timestamp

    model_config = ConfigDict(
        json_schema_extra={
            "if": {"required": ["outcome"], "properties": {"outcome": {"const": Outcome.ACCEPTED.value}}},
            "then": {
                "required": ["acceptedSuggestions"],
                "properties": {"acceptedSuggestions": {"type": "array", "minItems": 1}},
            },
        }
    )

    @model_validator(mode="after")
    def _conditional_fields(self) -> FeedbackItem:
        if self.outcome is Outcome.ACCEPTED and not self.acceptedSuggestions:
            raise ValueError("acceptedSuggestions is required when outcome is 'accepted'")
        return self

    @property
    def timestamp_utc(self) -> dt.datetime:
        return self.outcomeTimestamp.astimezone(dt.UTC)


class FeedbackRequest(_Lenient):
    feedback: list[FeedbackItem] = Field(min_length=1)
