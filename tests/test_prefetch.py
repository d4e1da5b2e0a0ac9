"""Prefetch token replacement, as CDS Hooks 2.0 "Prefetch tokens" describes it."""

from __future__ import annotations

import pytest

from cds_service.hookrequest import parse_hook_request
from cds_service.prefetch import resolve_template
from cds_service.services import PREFETCH, SERVICES
from tests.conftest import hook_request, service_request

CONTEXT = {
    "patientId": "pat-1",
    "userId": "Practitioner/prac-9",
    "encounterId": "enc-3",
    "selections": ["ServiceRequest/sr-1"],
    "draftOrders": {"resourceType": "Bundle", "entry": []},
    "count": 3,
    "flag": True,
}


@pytest.mark.parametrize(
    ("template", "query"),
    [
        ("Patient/{{context.patientId}}", "Patient/pat-1"),
        ("Coverage?patient={{context.patientId}}&status=active", "Coverage?patient=pat-1&status=active"),
        ("Encounter/{{context.encounterId}}?_x={{context.patientId}}", "Encounter/enc-3?_x=pat-1"),
        ("Observation?_count={{context.count}}&x={{context.flag}}", "Observation?_count=3&x=true"),
        ("Practitioner/{{userPractitionerId}}", "Practitioner/prac-9"),
        ("Practitioner?_id={{userPractitionerId}}", "Practitioner?_id=prac-9"),
        ("Patient?gender=female", "Patient?gender=female"),  # no tokens: the template as it is
    ],
)
def test_context_and_user_tokens_are_replaced(template, query):
    assert resolve_template(template, CONTEXT) == query


@pytest.mark.parametrize(
    "template",
    [
        "Encounter/{{context.missing}}",  # no such context field
        "Bundle/{{context.draftOrders}}",  # not a primitive: not a prefetch token
        "X?{{context.selections}}",  # an array, not a primitive
        "PractitionerRole/{{userPractitionerRoleId}}",  # userId names a Practitioner
        "Patient/{{userPatientId}}",
        "RelatedPerson/{{userRelatedPersonId}}",
        "Patient/{{ context.patientId }}",  # a token holds only the path, no spaces
        "Patient/{{patientId}}",  # context fields need the context. prefix
        "Observation?date=ge{{today() - 90 days}}",  # FHIRPath is the 3.0 ballot, not 2.0
        "Patient/{{context.patientId.id}}",  # only root-level fields
        "Patient/{{context.patientId}",  # unbalanced delimiters
        "Patient/{{context.patientId}}}}",
    ],
)
def test_tokens_that_cannot_be_filled_give_no_query(template):
    assert resolve_template(template, CONTEXT) is None


def test_user_tokens_follow_the_user_type_and_absolute_references():
    assert resolve_template("{{userPractitionerRoleId}}", {"userId": "PractitionerRole/role-1"}) == "role-1"
    assert resolve_template("{{userPatientId}}", {"userId": "Patient/p-2"}) == "p-2"
    assert resolve_template("{{userRelatedPersonId}}", {"userId": "RelatedPerson/rp"}) == "rp"
    absolute = {"userId": "https://ehr.example.org/fhir/Practitioner/abc"}
    assert resolve_template("{{userPractitionerId}}", absolute) == "abc"
    assert resolve_template("{{userPractitionerId}}", {"userId": "Practitioner/"}) is None


def test_replaced_values_cannot_change_the_query():
    hostile = {"patientId": "x&_include=*/../Patient?{{a}} b"}
    query = resolve_template("Coverage?patient={{context.patientId}}&status=active", hostile)
    assert query == "Coverage?patient=x%26_include%3D%2A%2F..%2FPatient%3F%7B%7Ba%7D%7D%20b&status=active"


def test_empty_values_are_not_filled():
    assert resolve_template("Patient/{{context.patientId}}", {"patientId": ""}) is None


def test_declared_templates_resolve_for_a_real_request():
    request = parse_hook_request(hook_request(service_request(code="0600T")))
    fields = request.context.model_dump()
    for service in SERVICES:
        assert service.prefetch == PREFETCH
        assert {key: resolve_template(t, fields) for key, t in service.prefetch.items()} == {
            "patient": "Patient/pat-1",
            "coverage": "Coverage?patient=pat-1&status=active",
        }
