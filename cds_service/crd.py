"""Da Vinci CRD coverage information: ``systemActions`` that annotate each matching order.

Da Vinci CRD 2.2.1 (checklist section 11): coverage information is a systemAction of type
``update`` whose ``resource`` is the request resource from the context, unchanged except for the
``ext-coverage-information`` extension (resp-25, resp-37), one per in-scope order (resp-29).

What this service asserts for an order its policy calls investigational:

- ``covered`` = ``not-covered``, so no ``pa-needed`` (invariant crd-ci-q2), no ``doc-needed``,
  ``info-needed`` or questionnaire (crd-ci-q1, q3, q6, q8 hold trivially);
- ``reason`` as text (investigational and not medically necessary): the CRD reason value set has
  no code for it, and a text-only reason needs no coding (crd-ci-q7);
- ``detail``: category ``cat-other``, code ``policy-link`` (HL7 THO crd-coverage-detail, the code
  system CRD 2.2 moved its detail codes to), value the policy's URL;
- ``coverage``: a reference to each Coverage in force (the extension repeats per coverage). With
  none known to be in force, resp-45: ``not-covered`` with reason ``no-active-coverage``; when the
  coverage could not be had at all, ``coverage-not-found`` (the payer cannot resolve a coverage).
  The reference then carries only a display text;
- ``date`` (today, UTC) and a fresh ``coverage-assertion-id``.

Each extension is validated as an R4 Extension with fhir.resources before it leaves, and any
coverage-information this server asserted earlier for the same coverage is replaced, not repeated.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fhir.resources.R4B.extension import Extension

from cds_service.cards import CoverageWording
from cds_service.config import SystemActionPlacement
from cds_service.context import PatientContext

COVERAGE_INFORMATION_URL = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
REASON_SYSTEM = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"
DETAIL_SYSTEM = "http://terminology.hl7.org/CodeSystem/crd-coverage-detail"


@dataclass(frozen=True, slots=True)
class CrdOptions:
    """Whether to answer as a CRD server (Settings.crd_coverage_info) and where actions go."""

    coverage_info: bool = False
    placement: SystemActionPlacement = SystemActionPlacement.TOP_LEVEL


class CoverageReason(StrEnum):
    """CRD coverage-assertion reasons for an order without a known coverage (resp-45)."""

    NO_ACTIVE_COVERAGE = "no-active-coverage"
    COVERAGE_NOT_FOUND = "coverage-not-found"


_REASON_DISPLAY: Mapping[CoverageReason, str] = {
    CoverageReason.NO_ACTIVE_COVERAGE: "Coverage not active",
    CoverageReason.COVERAGE_NOT_FOUND: "Coverage not found",
}


def coverage_information(
    coverage: Mapping[str, Any],
    wording: CoverageWording,
    policy_url: str,
    today: dt.date,
    reason: CoverageReason | None = None,
) -> dict[str, Any]:
    """One ext-coverage-information extension asserting ``not-covered`` for ``coverage``."""
    parts: list[dict[str, Any]] = [
        {"url": "coverage", "valueReference": dict(coverage)},
        {"url": "covered", "valueCode": "not-covered"},
    ]
    if reason is not None:
        coding = {"system": REASON_SYSTEM, "code": reason.value, "display": _REASON_DISPLAY[reason]}
        parts.append({"url": "reason", "valueCodeableConcept": {"coding": [coding]}})
    parts += [
        {"url": "reason", "valueCodeableConcept": {"text": wording.reason}},
        {
            "url": "detail",
            "extension": [
                {"url": "category", "valueCode": "cat-other"},
                {"url": "code", "valueCodeableConcept": {"coding": [{"system": DETAIL_SYSTEM, "code": "policy-link"}]}},
                {"url": "value", "valueUrl": policy_url},
            ],
        },
        {"url": "date", "valueDate": today.isoformat()},
        {"url": "coverage-assertion-id", "valueString": str(uuid.uuid4())},
    ]
    extension = {"url": COVERAGE_INFORMATION_URL, "extension": parts}
    Extension.model_validate(extension)  # a failure here is a bug in this module, not bad input
    return extension


def _coverage_targets(
    context: PatientContext, wording: CoverageWording
) -> list[tuple[dict[str, Any], CoverageReason | None]]:
    """The coverages to assert against, each with the reason code that goes with it."""
    if context.coverages is None:
        return [({"display": wording.no_coverage}, CoverageReason.COVERAGE_NOT_FOUND)]
    known = [{"reference": f"Coverage/{c['id']}"} for c in context.coverages if isinstance(c.get("id"), str)]
    if not known:
        return [({"display": wording.no_coverage}, CoverageReason.NO_ACTIVE_COVERAGE)]
    return [(reference, None) for reference in known]


def _is_ours(extension: object, references: Sequence[Mapping[str, Any]]) -> bool:
    """An earlier coverage-information for one of the same coverages (to replace, resp-37)."""
    if not isinstance(extension, dict) or extension.get("url") != COVERAGE_INFORMATION_URL:
        return False
    parts = extension.get("extension") if isinstance(extension.get("extension"), list) else []
    return any(
        isinstance(p, dict) and p.get("url") == "coverage" and p.get("valueReference") in references for p in parts
    )


def coverage_action(
    order: Mapping[str, Any],
    context: PatientContext,
    wording: CoverageWording,
    policy_url: str,
    today: dt.date,
) -> dict[str, Any]:
    """The ``update`` systemAction for one order: the order as sent plus coverage information."""
    targets = _coverage_targets(context, wording)
    fresh = [coverage_information(ref, wording, policy_url, today, reason) for ref, reason in targets]
    existing = order.get("extension") if isinstance(order.get("extension"), list) else []
    kept = [e for e in existing if not _is_ours(e, [ref for ref, _ in targets])]
    return {
        "type": "update",
        "description": wording.action_description,
        "resource": {**order, "extension": kept + fresh},
    }


def place_system_actions(
    response: dict[str, Any], actions: Sequence[Mapping[str, Any]], placement: SystemActionPlacement
) -> None:
    """Put ``actions`` where the configured client reads them (nothing when there are none)."""
    if not actions:
        return
    if placement in (SystemActionPlacement.TOP_LEVEL, SystemActionPlacement.BOTH):
        response["systemActions"] = list(actions)
    if placement in (SystemActionPlacement.EXTENSION, SystemActionPlacement.BOTH):
        response.setdefault("extension", {})["systemActions"] = list(actions)
