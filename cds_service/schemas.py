"""Response bodies as pydantic models, for the OpenAPI document.

The views build their JSON directly (the engine and the card builder return plain dicts); these
models describe that JSON so ``/openapi.json`` can state it, and the tests check every kind of
response the service gives against them, so the description cannot drift from the behaviour.
Request bodies need no copy here: the document uses the very models that validate them
(:class:`cds_service.hookrequest.HookRequest`, :class:`cds_service.feedback.FeedbackRequest`).

Card shapes follow CDS Hooks 2.0 "CDS Service Response" (Card, Source, Suggestion, Action, Link);
fields the service never sends are still described where the spec defines them, so the document
tells a client what it may meet. Optional fields are omitted from the JSON rather than sent as
null (the spec forbids null), hence ``X | SkipJsonSchema[None]``: optional, never null.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.json_schema import SkipJsonSchema

from cds_service.hookrequest import Hook
from cds_service.policy import CodeRule, Evidence, Policy

Text = Annotated[str, StringConstraints(min_length=1)]
# CDS Hooks 2.0 "Extensions": an object of extension names to values, never empty.
Extension = Annotated[dict[str, Any], Field(min_length=1)]


def _no_null_defaults(schema: dict[str, Any]) -> None:
    """An omitted field has no value on the wire; "default: null" would suggest null is sent."""
    for prop in schema.get("properties", {}).values():
        if "default" in prop and prop["default"] is None:
            del prop["default"]


class _Wire(BaseModel):
    """A body exactly as sent: unknown fields would be drift, so the schema forbids them."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_null_defaults)


# --- Discovery (CDS Hooks 2.0 "Discovery") ---------------------------------------------------


class DiscoveryService(_Wire):
    hook: Hook
    title: Text | SkipJsonSchema[None] = None
    description: Text
    id: Text
    prefetch: dict[str, str] | SkipJsonSchema[None] = None
    usageRequirements: Text | SkipJsonSchema[None] = None


class DiscoveryResponse(_Wire):
    services: list[DiscoveryService]


# --- Cards (CDS Hooks 2.0 "CDS Service Response") ---------------------------------------------


class Indicator(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Coding(_Wire):
    system: Text
    code: Text
    display: Text | SkipJsonSchema[None] = None


class Source(_Wire):
    label: Text
    url: Text | SkipJsonSchema[None] = None
    icon: Text | SkipJsonSchema[None] = None
    topic: Coding | SkipJsonSchema[None] = None


class ActionType(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class Action(_Wire):
    type: ActionType
    description: Text
    resource: dict[str, Any] | SkipJsonSchema[None] = None
    resourceId: Text | SkipJsonSchema[None] = None


class Suggestion(_Wire):
    label: Text
    uuid: Text | SkipJsonSchema[None] = None
    isRecommended: bool | SkipJsonSchema[None] = None
    actions: list[Action] | SkipJsonSchema[None] = None


class LinkType(StrEnum):
    ABSOLUTE = "absolute"
    SMART = "smart"


class Link(_Wire):
    label: Text
    url: Text
    type: LinkType
    appContext: Text | SkipJsonSchema[None] = None
    autolaunchable: bool | SkipJsonSchema[None] = None


class SelectionBehavior(StrEnum):
    AT_MOST_ONE = "at-most-one"
    ANY = "any"


class Card(_Wire):
    uuid: UUID | SkipJsonSchema[None] = None
    # "<140 characters" (CDS Hooks 2.0 Card.summary).
    summary: Annotated[str, StringConstraints(min_length=1, max_length=139)]
    detail: Text | SkipJsonSchema[None] = None
    indicator: Indicator
    source: Source
    suggestions: list[Suggestion] | SkipJsonSchema[None] = None
    selectionBehavior: SelectionBehavior | SkipJsonSchema[None] = None
    overrideReasons: list[Coding] | SkipJsonSchema[None] = None
    links: list[Link] | SkipJsonSchema[None] = None
    extension: Extension | SkipJsonSchema[None] = None


class CardsResponse(_Wire):
    cards: list[Card]
    # Da Vinci CRD coverage information, when CDS_CRD_COVERAGE_INFO is on (cds_service.crd).
    systemActions: list[Action] | SkipJsonSchema[None] = None
    extension: Extension | SkipJsonSchema[None] = None


# --- Feedback, errors, operations -------------------------------------------------------------


class FeedbackReceived(_Wire):
    """CDS Hooks defines no feedback response body; this service reports how many items it took."""

    received: int = Field(ge=1)


class IssueSeverity(StrEnum):
    FATAL = "fatal"
    ERROR = "error"
    WARNING = "warning"
    INFORMATION = "information"


class Issue(_Wire):
    severity: IssueSeverity
    # FHIR IssueType code (http://hl7.org/fhir/issue-type), e.g. "invalid", "not-found".
    code: Text
    diagnostics: str
    # The offending field of the request body, as a path such as "context.draftOrders".
    expression: list[str] | SkipJsonSchema[None] = None


class OperationOutcome(_Wire):
    """Every error this service answers with (FHIR R4 OperationOutcome)."""

    resourceType: Literal["OperationOutcome"]
    issue: list[Issue] = Field(min_length=1)


class Health(_Wire):
    status: Literal["ok"]


class ReadinessStatus(StrEnum):
    READY = "ready"
    NOT_READY = "not-ready"


class CheckStatus(StrEnum):
    PASS = "pass"
    FAIL = "fail"


class CheckResult(_Wire):
    name: Text
    status: CheckStatus
    detail: str


class Readiness(_Wire):
    status: ReadinessStatus
    checks: list[CheckResult]


# --- Evidence summary (GET /evidence/{policy_id}.json) -----------------------------------------


class EvidenceCode(CodeRule):
    system_name: str
    system_uri: str


class EvidenceTotals(_Wire):
    studies: int
    subjects_treated_with_ire: int
    largest_study_ire_subjects: int
    randomized_trials: int
    by_design: dict[str, int]


class EvidenceWithTotals(Evidence):
    totals: EvidenceTotals


class EvidenceUrls(_Wire):
    html: str
    json_: str = Field(alias="json")


class EvidenceDocument(Policy):
    """The policy as the evidence page shows it: its codes with system names, study totals, links.

    The card template name is internal and left out of the document.
    """

    card: SkipJsonSchema[str | None] = Field(default=None, exclude=True)
    codes: list[EvidenceCode]
    evidence: EvidenceWithTotals
    urls: EvidenceUrls
