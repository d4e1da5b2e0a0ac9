"""The matching engine on its own: every code of the coding section, text, and near misses."""

from __future__ import annotations

import pytest

from cds_service.config import data_dir
from cds_service.matching import Matcher, Reason, ReasonKind
from cds_service.policy import load_policies
from tests.conftest import CPT, PCS, service_request

POLICIES = load_policies(data_dir("policies"))
MATCHER = Matcher(POLICIES)
SURG = POLICIES[0]

CPT_ALWAYS = ["0600T", "0601T"]
PCS_CODES = [
    "02583ZF",
    "0F500ZF", "0F503ZF", "0F504ZF",
    "0F510ZF", "0F513ZF", "0F514ZF",
    "0F520ZF", "0F523ZF", "0F524ZF",
    "0F5G0ZF", "0F5G3ZF", "0F5G4ZF",
]  # fmt: skip
CPT_ALIASES = [
    CPT,
    "https://www.ama-assn.org/go/cpt",
    "urn:oid:2.16.840.1.113883.6.12",
    " http://www.ama-assn.org/go/cpt/ ",
]
PCS_ALIASES = [
    PCS,
    "urn:oid:2.16.840.1.113883.6.4",
    "http://terminology.hl7.org/CodeSystem/icd10PCS",
    "http://www.icd10data.com/icd10pcs",
]


def matches(resource: object) -> list[str]:
    return [m.policy.id for m in MATCHER.match(resource)]


def test_policy_lists_exactly_the_coding_section():
    listed = {(c.system.value, c.code) for c in SURG.codes}
    expected = {("cpt", c) for c in [*CPT_ALWAYS, "93799"]} | {("icd10pcs", c) for c in PCS_CODES}
    assert listed == expected
    assert [c.code for c in SURG.codes if c.requires_text] == ["93799"]


@pytest.mark.parametrize("code", CPT_ALWAYS)
@pytest.mark.parametrize("system", CPT_ALIASES)
def test_every_cpt_code_under_every_system_alias(code, system):
    found = MATCHER.match(service_request(system=system, code=code))
    assert [m.policy.id for m in found] == ["SURG.00126"]
    (reason,) = found[0].reasons
    assert (reason.kind, reason.system, reason.code, reason.field) == (
        ReasonKind.CODE,
        "CPT",
        code,
        "code.coding[0]",
    )


@pytest.mark.parametrize("code", PCS_CODES)
@pytest.mark.parametrize("system", PCS_ALIASES)
def test_every_icd10pcs_code_under_every_system_alias(code, system):
    assert matches(service_request(system=system, code=code)) == ["SURG.00126"]


@pytest.mark.parametrize("code", ["0600t", " 0601T ", "0f5g3zf", "\t02583zf\n"])
def test_codes_in_any_case_and_with_stray_whitespace(code):
    system = PCS if "z" in code.lower() else CPT
    assert matches(service_request(system=system, code=code)) == ["SURG.00126"]


def test_trigger_code_among_many_codings_in_any_position():
    resource = service_request(code="47382", display="Ablation liver tumor, radiofrequency")
    resource["code"]["coding"] = [
        {"system": "http://snomed.info/sct", "code": "387713003"},
        {"system": "http://example.org/local-orderables", "code": "PROC-1"},
        {"system": CPT, "code": "0601T"},
    ]
    (found,) = MATCHER.match(resource)
    assert found.reasons[0].field == "code.coding[2]"


@pytest.mark.parametrize(
    ("system", "code"),
    [
        (PCS, "00XG0ZF"),  # ends in F, transfer of optic nerve: not IRE
        (PCS, "8E0YXBF"),  # ends in F, computer-assisted procedure: not IRE
        (PCS, "02583ZZ"),  # the same destruction without the IRE qualifier
        (PCS, "0F503ZZ"),
        (PCS, "0F5G3ZZ"),
        (CPT, "93656"),  # AF ablation: energy-agnostic
        (CPT, "47382"),  # RF ablation of liver tumour
        (CPT, "0602T"),  # the next Category III code
        ("http://snomed.info/sct", "0600T"),  # right code, wrong system
        (None, "0600T"),  # no system at all: ambiguous
        ("http://loinc.org", "0601T"),
        (PCS, "0600T"),  # a CPT code claimed as ICD-10-PCS
    ],
)
def test_codes_outside_the_list_do_not_match(system, code):
    assert matches(service_request(system=system, code=code)) == []


@pytest.mark.parametrize(
    "text",
    [
        "Pulsed field ablation for pulmonary vein isolation",
        "PFA for PVI",
        "PVI using PFA catheter",
        "Irreversible electroporation (IRE), pulmonary veins",
        "cardiac ablation - IRE",
    ],
)
def test_93799_counts_when_the_text_names_pfa_or_ire(text):
    found = MATCHER.match(service_request(code="93799", display="Unlisted cardiovascular service", text=text))
    assert [m.policy.id for m in found] == ["SURG.00126"]
    kinds = {r.kind for r in found[0].reasons}
    assert ReasonKind.CODE_WITH_TEXT in kinds


def test_93799_qualified_by_a_note_alone():
    resource = service_request(code="93799", text="Unlisted EP procedure", note=[{"text": "Plan: PFA"}])
    (found,) = MATCHER.match(resource)
    assert [r.kind for r in found.reasons] == [ReasonKind.CODE_WITH_TEXT]
    assert found.reasons[0].phrase == "PFA"


@pytest.mark.parametrize(
    "text",
    [
        None,
        "Unlisted cardiovascular service or procedure",
        "Radiofrequency ablation, pulmonary vein isolation",
        "Cryoballoon PVI",
        "Pulsed dye laser",
        "PFA-100 closure time",
    ],
)
def test_93799_alone_or_with_other_text_does_not_match(text):
    assert matches(service_request(code="93799", text=text)) == []


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("Irreversible electroporation of liver lesion", "Irreversible electroporation"),
        ("IRREVERSIBLE ELECTROPORATION", "IRREVERSIBLE ELECTROPORATION"),
        ("irreversible-electroporation, percutaneous", "irreversible-electroporation"),
        ("Irreversible\u00a0 electroporation", "Irreversible\u00a0 electroporation"),
        ("NanoKnife ablation", "NanoKnife"),
        ("nanoknife", "nanoknife"),
        ("Ablation with the Oncobionic system", "Oncobionic"),
        ("Pulsed field ablation of AF", "Pulsed field ablation"),
        ("Pulse field ablation", "Pulse field ablation"),
        ("High-frequency irreversible electroporation (H-FIRE) of prostate", "H-FIRE"),
        ("Electrochemotherapy of skin metastases", "Electrochemotherapy"),
        ("Pulsed electric field ablation, lung", "Pulsed electric field ablation"),
        ("IRE of pancreatic tumor", "IRE"),
        ("PFA ablation, left atrium", "PFA"),
    ],
)
def test_free_text_alone_matches(text, phrase):
    (found,) = MATCHER.match(service_request(system=None, text=text))
    assert phrase in [r.phrase for r in found.reasons]
    assert all(r.kind is ReasonKind.TEXT for r in found.reasons)


def test_local_code_with_display_text_matches():
    resource = service_request(
        system="http://hospital.example.org/orderables", code="IR-4471", display="NanoKnife tumor ablation"
    )
    (found,) = MATCHER.match(resource)
    assert found.reasons[0].field == "code.coding[0].display"


def test_order_detail_text_matches():
    resource = service_request(
        system=None, text="Ablation, pancreas", orderDetail=[{"text": "Energy: irreversible electroporation"}]
    )
    (found,) = MATCHER.match(resource)
    assert found.reasons[0].field == "orderDetail[0].text"


@pytest.mark.parametrize(
    "text",
    [
        "Fire safety consult",
        "Guide wire placement",
        "Patients require ablation of the tumor",  # "require" contains IRE
        "Entire liver MRI, lesion follow-up",
        "Desire for tumor ablation discussed",
        "IRE",  # the acronym alone, with no clinical context
        "Ireland transfer, liver lesion",
        "4% PFA fixation of biopsy",  # paraformaldehyde
        "PFA-100 closure time",  # platelet function analyzer
        "PFA-100 before ablation",  # still the lab test, even next to a context word
        "PFAS exposure panel",
        "Reversible electroporation for gene delivery",
        "Electroporation-mediated plasmid DNA vaccine",
        "Ire of liver lesion",  # the acronym only counts in upper case
        "Radiofrequency ablation of liver tumor",
        "Microwave ablation",
        "Cryoablation of renal mass",
        "Pulsed dye laser",
        "Electroconvulsive therapy (ECT)",
        "0601T",  # a code in free text is never read as a code
        "Scheduled for 20260601T100000Z",
        "Iron-responsive element (IRE) binding assay",
    ],
)
def test_near_misses_do_not_match(text):
    assert matches(service_request(system=None, text=text)) == []


def test_history_in_a_note_does_not_make_an_unrelated_order_match():
    resource = service_request(
        code="74177",
        display="CT abdomen and pelvis with contrast",
        note=[{"text": "s/p NanoKnife IRE of liver 2024"}],
    )
    assert matches(resource) == []


def test_code_in_timestamp_fields_is_ignored():
    resource = service_request(code="74177", occurrenceDateTime="20260601T100000Z", authoredOn="20260600T")
    assert matches(resource) == []


def test_every_reason_is_recorded_once():
    resource = service_request(code="0600T", display="IRE", text="NanoKnife IRE of liver tumor")
    (found,) = MATCHER.match(resource)
    first = found.reasons[0]
    assert (first.kind, first.system, first.code, first.field) == (ReasonKind.CODE, "CPT", "0600T", "code.coding[0]")
    assert Reason(ReasonKind.TEXT, "code.text", phrase="NanoKnife") in found.reasons
    assert len(found.reasons) == len(set(found.reasons))


def test_order_identity_and_label():
    (found,) = MATCHER.match(service_request("abc", code="0601T", text="Open IRE, liver"))
    assert (found.reference, found.label) == ("ServiceRequest/abc", "Open IRE, liver")
    (unnamed,) = MATCHER.match(
        {"resourceType": "ServiceRequest", "code": {"coding": [{"system": CPT, "code": "0601T"}]}}
    )
    assert unnamed.reference is None
    assert unnamed.label == "0601T"


@pytest.mark.parametrize(
    "value",
    [
        None, 0, 1.5, "text", [], [1, 2], {}, {"code": None}, {"code": "0600T"}, {"code": {"coding": None}},
        {"code": {"coding": [None, 1, "x", {"system": 5, "code": ["0600T"]}]}},
        {"code": {"text": 42, "coding": {"system": CPT, "code": "0600T"}}},
        {"orderDetail": "IRE", "note": {"text": "PFA"}, "reasonCode": [None], "patientInstruction": 7},
        {"resourceType": "ServiceRequest", "id": ["x"], "code": {"coding": [{"system": CPT, "code": "0600T"}]}},
    ],
)  # fmt: skip
def test_never_raises_on_any_json_value(value):
    MATCHER.match(value)
