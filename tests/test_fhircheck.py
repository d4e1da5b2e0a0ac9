"""FHIR validation of examined orders: every call logs the problems, each distinct resource is
validated by fhir.resources once."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cds_service import create_app, fhircheck
from cds_service.fhircheck import FhirChecker
from tests.conftest import SIGN, hook_request, service_request


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Records every resource fhir.resources really validates (the validation itself still runs)."""
    seen: list[dict[str, Any]] = []
    real = fhircheck.fhir_problems

    def recording(resource: dict[str, Any]) -> fhircheck.FhirProblems | None:
        seen.append(resource)
        return real(resource)

    monkeypatch.setattr(fhircheck, "fhir_problems", recording)
    return seen


def broken_order(order_id: str = "sr-bad") -> dict[str, Any]:
    order = service_request(order_id, code="0601T", text="Open IRE of liver tumor")
    order["authoredOn"] = "last tuesday"
    return order


def test_a_resource_seen_again_is_not_validated_again(validations):
    checker = FhirChecker(16)
    order = service_request(code="74177", text="CT abdomen")
    assert checker.problems(order) is None
    assert checker.problems(copy.deepcopy(order)) is None
    assert len(validations) == 1


def test_the_verdict_follows_the_content_not_the_id(validations):
    checker = FhirChecker(16)
    valid = service_request("sr-1", code="74177")
    changed = copy.deepcopy(valid)
    changed["authoredOn"] = "last tuesday"
    assert checker.problems(valid) is None
    problems = checker.problems(changed)
    assert problems is not None and problems.count == 1 and "authoredOn" in problems.summary
    assert len(validations) == 2


def test_json_types_are_not_conflated(validations):
    checker = FhirChecker(16)
    as_bool = service_request("sr-1", code="74177", doNotPerform=True)
    as_int = service_request("sr-1", code="74177", doNotPerform=1)
    as_text = service_request("sr-1", code="74177", doNotPerform="true")
    assert checker.problems(as_bool) is None
    for other in (as_int, as_text):
        checker.problems(other)
    assert len(validations) == 3


def test_the_cache_is_bounded_and_forgets_the_least_recently_used(validations):
    checker = FhirChecker(2)
    first, second, third = (service_request(f"sr-{i}", code="74177") for i in range(3))
    for order in (first, second, first, third):  # third evicts second, the least recently used
        checker.problems(order)
    assert len(validations) == 3
    checker.problems(first)
    assert len(validations) == 3
    checker.problems(second)
    assert len(validations) == 4


def test_size_zero_validates_every_time(validations):
    checker = FhirChecker(0)
    order = service_request(code="74177")
    checker.problems(order)
    checker.problems(order)
    assert len(validations) == 2


def test_a_resource_too_deep_to_fingerprint_is_still_validated(validations):
    nested: list[Any] = []
    for _ in range(3000):
        nested = [nested]
    order = service_request(code="74177", extension=nested)
    checker = FhirChecker(16)
    for _ in range(2):
        problems = checker.problems(order)
        assert problems is not None and "extension" in problems.summary
    assert len(validations) == 2  # no fingerprint, so no cache: validated each time


def test_every_call_logs_the_problem_even_when_the_verdict_is_remembered(client, caplog, validations):
    caplog.set_level("WARNING")
    first, second = hook_request(broken_order()), hook_request(broken_order())
    for body in (first, second):
        assert client.post(SIGN, json=body).status_code == 200
    assert len(validations) == 1
    for body in (first, second):
        assert f"hookInstance={body['hookInstance']}: ServiceRequest/sr-bad is not valid FHIR R4" in caplog.text


def test_cache_size_is_configurable_and_zero_turns_it_off(validations):
    app = create_app({"fhir_cache_size": 0})
    body = hook_request(service_request(code="0600T", text="IRE of liver tumour"))
    for _ in range(2):
        assert app.test_client().post(SIGN, json=body).status_code == 200
    assert len(validations) == 2


@pytest.mark.parametrize(("scope", "validated"), [("matched", ["sr-ire"]), ("all", ["sr-ct", "sr-ire", "sr-bad"])])
def test_by_default_only_the_orders_a_card_is_about_are_validated(validations, caplog, scope, validated):
    caplog.set_level("WARNING")
    ct = service_request("sr-ct", code="74177", text="CT abdomen")
    ire = service_request("sr-ire", code="0600T", text="IRE of liver tumour")
    bad = service_request("sr-bad", code="74177", text="CT chest") | {"status": 42}
    response = create_app({"fhir_validation": scope}).test_client().post(SIGN, json=hook_request(ct, ire, bad))
    assert response.status_code == 200 and len(response.json["cards"]) == 1
    assert [resource["id"] for resource in validations] == validated
    assert ("ServiceRequest/sr-bad is not valid FHIR R4" in caplog.text) is (scope == "all")
