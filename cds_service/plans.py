"""Plan-specific guidance: which of a policy's ``plan_notes`` apply to this patient.

A note applies when one of the patient's coverages in force is of a plan type the note lists and
one of the patient's current addresses is in a state it lists. No coverage, no address or no
match means no note, never an error.

Plan type comes from ``Coverage.type`` (``Coverage.class`` carries payer-specific plan and group
identifiers, not a plan type, so it is not used):

1. Source of Payment Typology (SOPT, ``https://nahdo.org/sopt``, the payer-type code system US
   Core binds ``Coverage.type`` to), by hierarchy prefix: ``511`` Commercial Managed Care - HMO,
   ``512`` Commercial Managed Care - PPO, ``1`` Medicare, ``2`` Medicaid. A Medicare or Medicaid
   HMO (``111``, ``211``) is therefore not a commercial HMO.
2. Only when no SOPT code is present: HL7 v3 ActCode ``HMO`` or ``PPO``
   (``http://terminology.hl7.org/CodeSystem/v3-ActCode``), read as commercial, since ActCode
   alone cannot tell a public programme's managed-care plan from a commercial one.

State comes from ``Patient.address.state`` as a USPS two-letter code (US Core's binding), in any
letter case, ignoring addresses marked ``use: old`` or whose ``period`` has ended.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from cds_service.context import PatientContext
from cds_service.policy import PlanNote, PlanType
from cds_service.terminology import system_key

SOPT_SYSTEMS = frozenset(system_key(s) for s in ("https://nahdo.org/sopt", "urn:oid:2.16.840.1.113883.3.221.5"))
ACT_CODE_SYSTEMS = frozenset(
    system_key(s) for s in ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "urn:oid:2.16.840.1.113883.5.4")
)

# Longest prefix first: 511 and 512 sit under 5 (private insurance), 111 under 1 (Medicare).
_SOPT_PREFIXES: tuple[tuple[str, PlanType], ...] = (
    ("511", PlanType.COMMERCIAL_HMO),
    ("512", PlanType.COMMERCIAL_PPO),
    ("1", PlanType.MEDICARE),
    ("2", PlanType.MEDICAID),
)
_ACT_CODES: Mapping[str, PlanType] = {"HMO": PlanType.COMMERCIAL_HMO, "PPO": PlanType.COMMERCIAL_PPO}


def _codings(concept: object) -> Iterator[tuple[str, str]]:
    """(system key, code) for each well-formed coding of a CodeableConcept."""
    codings = concept.get("coding") if isinstance(concept, dict) else None
    for coding in codings if isinstance(codings, list) else []:
        if isinstance(coding, dict) and isinstance(coding.get("system"), str) and isinstance(coding.get("code"), str):
            yield system_key(coding["system"]), coding["code"].strip()


def plan_types(coverage: Mapping[str, Any]) -> frozenset[PlanType]:
    """The plan types ``Coverage.type`` states, by the rules in the module docstring."""
    codings = list(_codings(coverage.get("type")))
    sopt = [code for system, code in codings if system in SOPT_SYSTEMS]
    if sopt:
        return frozenset(plan for code in sopt for prefix, plan in _SOPT_PREFIXES if code.startswith(prefix))
    return frozenset(
        _ACT_CODES[code.upper()]
        for system, code in codings
        if system in ACT_CODE_SYSTEMS and code.upper() in _ACT_CODES
    )


def _current(address: Mapping[str, Any], today: dt.date) -> bool:
    if address.get("use") == "old":
        return False
    period = address.get("period")
    end = period.get("end") if isinstance(period, dict) else None
    return not (isinstance(end, str) and end[:10] < today.isoformat())


def patient_states(patient: Mapping[str, Any], today: dt.date) -> frozenset[str]:
    addresses = patient.get("address")
    return frozenset(
        a["state"].strip().upper()
        for a in (addresses if isinstance(addresses, list) else [])
        if isinstance(a, dict) and isinstance(a.get("state"), str) and _current(a, today)
    )


def applicable_notes(notes: Sequence[PlanNote], context: PatientContext, today: dt.date) -> tuple[PlanNote, ...]:
    """The notes whose plans and states both match this patient; () without the data to tell."""
    if not notes or context.patient is None or not context.coverages:
        return ()
    plans = frozenset().union(*(plan_types(c) for c in context.coverages))
    states = patient_states(context.patient, today)
    return tuple(n for n in notes if plans & set(n.plans) and states & set(n.states))
