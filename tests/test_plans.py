"""Plan-specific guidance: the California commercial HMO note of SURG.00126, and when it stays out."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from cds_service.context import PatientContext
from cds_service.plans import applicable_notes, patient_states, plan_types
from cds_service.policy import PlanNote, PlanType
from tests.conftest import ROOT, SIGN, coverage_resource, hook_request, patient_resource, searchset, service_request

TODAY = dt.date(2026, 11, 26)
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
IRE = service_request("sr-ire", code="0600T", text="IRE of liver tumor")
NOTE_WORDS = "Grievance and Appeals unit"


def typed(*codings: tuple[str, str]) -> dict:
    return coverage_resource(sopt=None, type={"coding": [{"system": s, "code": c} for s, c in codings]})


@pytest.mark.parametrize(
    ("coverage", "plans"),
    [
        (coverage_resource(sopt="511"), {PlanType.COMMERCIAL_HMO}),
        (coverage_resource(sopt="5111"), {PlanType.COMMERCIAL_HMO}),  # a finer SOPT code below 511
        (coverage_resource(sopt="512"), {PlanType.COMMERCIAL_PPO}),
        (coverage_resource(sopt="111"), {PlanType.MEDICARE}),  # Medicare HMO is not commercial
        (coverage_resource(sopt="211"), {PlanType.MEDICAID}),
        (coverage_resource(sopt="52"), set()),  # private indemnity insurance: none of the note's types
        (typed(("urn:oid:2.16.840.1.113883.3.221.5", "511")), {PlanType.COMMERCIAL_HMO}),
        (typed((ACT_CODE, "HMO")), {PlanType.COMMERCIAL_HMO}),
        (typed((ACT_CODE, "ppo")), {PlanType.COMMERCIAL_PPO}),
        (typed((ACT_CODE, "HMO"), ("https://nahdo.org/sopt", "111")), {PlanType.MEDICARE}),  # SOPT decides
        (typed(("http://example.org/plan-types", "HMO")), set()),
        (coverage_resource(sopt=None), set()),
        (coverage_resource(sopt=None, type={"text": "HMO"}), set()),  # free text is not a plan type
        (coverage_resource(sopt=None, type={"coding": [{"code": "511"}, "junk"]}), set()),
    ],
)
def test_plan_types(coverage, plans):
    assert plan_types(coverage) == plans


def test_patient_states_use_current_addresses_only():
    patient = patient_resource(state=None)
    patient["address"] = [
        {"use": "home", "state": " ca "},
        {"use": "old", "state": "NV"},
        {"use": "work", "state": "OR", "period": {"end": "2020-01-01"}},
        {"use": "temp", "state": "AZ", "period": {"start": "2026-01-01", "end": "2027-01-01"}},
        {"city": "No state"},
        "junk",
    ]
    assert patient_states(patient, TODAY) == {"CA", "AZ"}
    assert patient_states(patient_resource(state=None), TODAY) == frozenset()


NOTE = PlanNote(id="n", plans=[PlanType.COMMERCIAL_HMO], states=["CA"], text="Route it to the plan.")


@pytest.mark.parametrize(
    ("context", "applies"),
    [
        (PatientContext(patient_resource(), (coverage_resource(),)), True),
        (PatientContext(patient_resource(), (coverage_resource(sopt="512"), coverage_resource("c2"))), True),
        (PatientContext(patient_resource(state="TX"), (coverage_resource(),)), False),
        (PatientContext(patient_resource(), (coverage_resource(sopt="512"),)), False),
        (PatientContext(patient_resource(), ()), False),
        (PatientContext(patient_resource(), None), False),
        (PatientContext(None, (coverage_resource(),)), False),
        (PatientContext(), False),
    ],
)
def test_applicable_notes(context, applies):
    assert applicable_notes([NOTE], context, TODAY) == ((NOTE,) if applies else ())


def detail_for(post_hook, prefetch: dict) -> str:
    body = hook_request(IRE, prefetch=prefetch)
    (card,) = post_hook(SIGN, body)["cards"]
    return card["detail"]


def test_california_commercial_hmo_gets_the_plan_note(post_hook):
    detail = detail_for(post_hook, {"patient": patient_resource(), "coverage": searchset(coverage_resource())})
    assert "**Guidance for this patient's plan:**" in detail
    assert NOTE_WORDS in detail and "Investigational Review Nurse" in detail
    assert "could not be checked" not in detail


@pytest.mark.parametrize(
    "prefetch",
    [
        {"patient": patient_resource(state="NV"), "coverage": searchset(coverage_resource())},
        {"patient": patient_resource(), "coverage": searchset(coverage_resource(sopt="512"))},
        {"patient": patient_resource(), "coverage": searchset(coverage_resource(sopt="111"))},
        {"patient": patient_resource(), "coverage": searchset(coverage_resource(status="cancelled"))},
        {"patient": patient_resource(), "coverage": None},
        {"patient": patient_resource(state=None), "coverage": searchset(coverage_resource())},
    ],
    ids=["nevada", "ppo", "medicare-hmo", "cancelled", "no-coverage", "no-address"],
)
def test_no_match_no_guidance_no_error(post_hook, prefetch):
    detail = detail_for(post_hook, prefetch)
    assert NOTE_WORDS not in detail and "Guidance for this patient's plan" not in detail
    assert "could not be checked" not in detail  # the data was there; it just does not match


def test_missing_patient_says_guidance_was_not_checked(post_hook):
    detail = detail_for(post_hook, {"patient": None, "coverage": searchset(coverage_resource())})
    assert NOTE_WORDS not in detail
    assert "Plan-specific guidance could not be checked: patient data was not available." in detail


def test_readme_example_with_prefetch(post_hook):
    example = json.loads((ROOT / "examples" / "order-sign-ire-ca-hmo.json").read_text())
    (card,) = post_hook(SIGN, example)["cards"]
    assert NOTE_WORDS in card["detail"]
