"""Da Vinci CRD coverage information: systemActions, extension structure and placement."""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from collections import Counter
from typing import Any

import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest

from cds_service import create_app
from cds_service.config import Settings, SystemActionPlacement
from cds_service.crd import COVERAGE_INFORMATION_URL, DETAIL_SYSTEM, REASON_SYSTEM
from tests.conftest import (
    SELECT,
    SIGN,
    assert_valid_response,
    coverage_resource,
    hook_request,
    patient_resource,
    searchset,
    service_request,
)

IRE = service_request("sr-ire", code="0600T", text="IRE of liver tumor")
NANO = service_request("sr-nano", system=None, text="NanoKnife ablation of pancreatic tumor")
CT = service_request("sr-ct", code="74177", display="CT abdomen and pelvis with contrast")
PREFETCH = {"patient": patient_resource(), "coverage": searchset(coverage_resource())}
# CRD 2.2.1 value sets of the coded sub-extensions (checklist section 11).
COVERED = {"covered", "not-covered", "conditional", "indeterminate"}
PA_NEEDED = {"no-auth", "auth-needed", "satisfied", "performpa", "conditional", "indeterminate"}
SUB_EXTENSIONS = {
    "coverage": (1, 1),
    "covered": (1, 1),
    "pa-needed": (0, 1),
    "doc-needed": (0, None),
    "doc-purpose": (0, None),
    "info-needed": (0, None),
    "billingCode": (0, None),
    "reason": (0, None),
    "detail": (0, None),
    "dependency": (0, None),
    "questionnaire": (0, None),
    "date": (1, 1),
    "coverage-assertion-id": (1, 1),
    "satisfied-pa-id": (0, 1),
    "contact": (0, None),
    "expiry-date": (0, 1),
}


def values(extension: dict[str, Any], url: str) -> list[Any]:
    out = []
    for part in extension["extension"]:
        if part["url"] == url:
            out.append(next(v for k, v in part.items() if k.startswith("value") or k == "extension"))
    return out


def check_coverage_information(ext: dict[str, Any]) -> None:
    """The ext-coverage-information profile's cardinalities and invariants crd-ci-q1..q9."""
    assert ext["url"] == COVERAGE_INFORMATION_URL and not any(k.startswith("value") for k in ext)  # complex
    counts = Counter(part["url"] for part in ext["extension"])
    assert set(counts) <= set(SUB_EXTENSIONS), counts
    for url, (low, high) in SUB_EXTENSIONS.items():
        assert counts[url] >= low and (high is None or counts[url] <= high), (url, counts[url])
    covered = values(ext, "covered")[0]
    assert covered in COVERED
    pa_needed = values(ext, "pa-needed")
    assert set(pa_needed) <= PA_NEEDED
    codes = [covered, *pa_needed, *values(ext, "doc-needed")]
    assert not values(ext, "questionnaire") or values(ext, "doc-needed")  # q1
    assert covered != "not-covered" or not pa_needed  # q2
    assert ("conditional" not in codes) or values(ext, "info-needed")  # q3
    assert pa_needed not in (["satisfied"], ["no-auth"]) or "withpa" not in values(ext, "doc-purpose")  # q4
    assert (pa_needed == ["satisfied"]) == bool(values(ext, "satisfied-pa-id"))  # q5
    assert "OTH" not in values(ext, "info-needed") or values(ext, "reason")  # q6
    for reason in values(ext, "reason"):  # q7: a coding outside the value set needs text
        for coding in reason.get("coding", []):
            assert coding["system"] == REASON_SYSTEM or reason.get("text")
    assert "indeterminate" not in codes or values(ext, "reason")  # q9
    dt.date.fromisoformat(values(ext, "date")[0])
    assert values(ext, "coverage-assertion-id")[0].strip()


def crd_app(placement: str = "top-level", **extra: Any):
    return create_app({"crd_coverage_info": True, "crd_system_actions": placement, **extra}).test_client()


def post(client, body: dict[str, Any], path: str = SIGN) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_valid_response(response.json)
    return response.json


def coverage_extensions(action: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in action["resource"]["extension"] if e["url"] == COVERAGE_INFORMATION_URL]


def test_off_by_default(post_hook):
    body = post_hook(SIGN, hook_request(IRE, prefetch=PREFETCH))
    assert "systemActions" not in body and "extension" not in body


def test_one_update_per_ire_order_with_coverage_information():
    body = post(crd_app(base_url="https://cds.example.org"), hook_request(CT, IRE, NANO, prefetch=PREFETCH))
    assert len(body["cards"]) == 1 and "extension" not in body
    actions = body["systemActions"]
    assert [a["resource"]["id"] for a in actions] == ["sr-ire", "sr-nano"]  # the CT is not touched
    for action, original in zip(actions, (IRE, NANO), strict=True):
        assert action["type"] == "update"
        assert "sr-" in action["description"] and "SURG.00126" in action["description"]
        resource = action["resource"]
        # resp-37: the order exactly as sent, plus the extension.
        assert {k: v for k, v in resource.items() if k != "extension"} == original
        ServiceRequest.model_validate(resource)  # valid R4 with the extension in place
        (ext,) = coverage_extensions(action)
        check_coverage_information(ext)
        assert values(ext, "coverage") == [{"reference": "Coverage/cov-1"}]
        assert values(ext, "covered") == ["not-covered"]
        (reason,) = values(ext, "reason")
        assert reason == {
            "text": "Health plan medical policy SURG.00126 (Irreversible Electroporation) considers this "
            "service investigational and not medically necessary."
        }
        (detail,) = values(ext, "detail")
        assert detail == [
            {"url": "category", "valueCode": "cat-other"},
            {"url": "code", "valueCodeableConcept": {"coding": [{"system": DETAIL_SYSTEM, "code": "policy-link"}]}},
            {"url": "value", "valueUrl": "https://cds.example.org/evidence/SURG.00126#policy"},
        ]
        assert values(ext, "date") == [dt.datetime.now(dt.UTC).date().isoformat()]
    ids = [values(coverage_extensions(a)[0], "coverage-assertion-id")[0] for a in actions]
    assert len(set(ids)) == 2 and all(uuid.UUID(i) for i in ids)


def test_one_extension_per_coverage_in_force():
    coverages = searchset(coverage_resource("cov-a"), coverage_resource("cov-b", sopt="512"))
    body = post(crd_app(), hook_request(IRE, prefetch={"patient": patient_resource(), "coverage": coverages}))
    extensions = coverage_extensions(body["systemActions"][0])
    assert [values(e, "coverage")[0] for e in extensions] == [
        {"reference": "Coverage/cov-a"},
        {"reference": "Coverage/cov-b"},
    ]
    for ext in extensions:
        check_coverage_information(ext)


@pytest.mark.parametrize(
    ("prefetch", "code"),
    [
        ({"patient": patient_resource(), "coverage": None}, "no-active-coverage"),
        (
            {"patient": patient_resource(), "coverage": searchset(coverage_resource(status="cancelled"))},
            "no-active-coverage",
        ),
        ({"patient": patient_resource()}, "coverage-not-found"),  # no coverage, and no server to ask
    ],
)
def test_without_a_coverage_in_force(prefetch, code):
    body = post(crd_app(), hook_request(IRE, prefetch=prefetch))
    (ext,) = coverage_extensions(body["systemActions"][0])
    check_coverage_information(ext)
    assert values(ext, "covered") == ["not-covered"]
    assert values(ext, "coverage") == [
        {"display": "No coverage in force was available to Health plan for this patient"}
    ]
    coded, text = values(ext, "reason")
    assert coded["coding"][0]["system"] == REASON_SYSTEM and coded["coding"][0]["code"] == code
    assert "investigational" in text["text"]


@pytest.mark.parametrize(
    ("placement", "top", "extension"),
    [("top-level", True, False), ("extension", False, True), ("both", True, True)],
)
def test_placement(placement, top, extension):
    body = post(crd_app(placement), hook_request(IRE, prefetch=PREFETCH))
    assert ("systemActions" in body) is top
    assert ("systemActions" in body.get("extension", {})) is extension
    actions = body.get("systemActions") or body["extension"]["systemActions"]
    assert [a["resource"]["id"] for a in actions] == ["sr-ire"]
    if top and extension:
        assert body["systemActions"] == body["extension"]["systemActions"]


def test_extension_placement_sits_beside_the_unavailable_report():
    body = post(crd_app("extension"), hook_request(IRE))
    assert set(body["extension"]) == {"systemActions", "cds-service.context-unavailable"}


def test_no_match_no_actions():
    assert post(crd_app("both"), hook_request(CT, prefetch=PREFETCH)) == {"cards": []}


def test_order_without_id_gets_no_action():
    anonymous = copy.deepcopy(IRE)
    del anonymous["id"]
    body = post(crd_app(), hook_request(anonymous, prefetch=PREFETCH))
    assert len(body["cards"]) == 1 and "systemActions" not in body


def test_order_select_annotates_only_the_selections():
    body = hook_request(IRE, NANO, hook="order-select", selections=["ServiceRequest/sr-nano"], prefetch=PREFETCH)
    actions = post(crd_app(), body, SELECT)["systemActions"]
    assert [a["resource"]["id"] for a in actions] == ["sr-nano"]


def test_earlier_assertions_for_the_same_coverage_are_replaced_and_others_kept():
    stale = {
        "url": COVERAGE_INFORMATION_URL,
        "extension": [
            {"url": "coverage", "valueReference": {"reference": "Coverage/cov-1"}},
            {"url": "covered", "valueCode": "conditional"},
        ],
    }
    other_payer = {
        "url": COVERAGE_INFORMATION_URL,
        "extension": [
            {"url": "coverage", "valueReference": {"reference": "Coverage/other"}},
            {"url": "covered", "valueCode": "covered"},
        ],
    }
    unrelated = {"url": "http://example.org/fhir/StructureDefinition/note", "valueString": "keep me"}
    order = dict(copy.deepcopy(IRE), extension=[stale, other_payer, unrelated])
    (action,) = post(crd_app(), hook_request(order, prefetch=PREFETCH))["systemActions"]
    extensions = action["resource"]["extension"]
    assert extensions[:2] == [other_payer, unrelated]
    assert values(extensions[2], "covered") == ["not-covered"]
    assert len(extensions) == 3


def test_settings_from_the_environment():
    settings = Settings.from_env({"CDS_CRD_COVERAGE_INFO": "true", "CDS_CRD_SYSTEM_ACTIONS": "extension"})
    assert settings.crd_coverage_info is True
    assert settings.crd_system_actions is SystemActionPlacement.EXTENSION
    with pytest.raises(ValueError, match="crd_system_actions"):
        Settings.from_env({"CDS_CRD_SYSTEM_ACTIONS": "sideways"})
