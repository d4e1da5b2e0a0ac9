"""The CDS Hooks / CRD card rules the selfcheck applies: each rule catches its own breakage."""

from __future__ import annotations

import copy

import pytest

from cds_service.cardrules import Rule, response_problems
from cds_service.examples import load_examples

GOOD = next(e.response for e in load_examples() if e.name == "order-sign-several-ire")


def broken(change) -> dict:
    body = copy.deepcopy(GOOD)
    change(body["cards"][0])
    return body


BREAKAGES = [
    ("summary-140", lambda c: c.update(summary="x" * 140), Rule.SUMMARY),
    ("summary-missing", lambda c: c.pop("summary"), Rule.SUMMARY),
    ("indicator", lambda c: c.update(indicator="urgent"), Rule.INDICATOR),
    ("source-label", lambda c: c["source"].pop("label"), Rule.SOURCE),
    ("source-url-relative", lambda c: c["source"].update(url="/evidence"), Rule.SOURCE),
    ("topic", lambda c: c["source"].pop("topic"), Rule.TOPIC),
    ("topic-no-code", lambda c: c["source"]["topic"].pop("code"), Rule.TOPIC),
    ("uuid", lambda c: c.pop("uuid"), Rule.UUID),
    ("no-links", lambda c: c.pop("links"), Rule.LINKS),
    ("relative-link", lambda c: [link.update(url="/evidence/SURG.00126") for link in c["links"]], Rule.LINKS),
    ("smart-links-only", lambda c: [link.update(type="smart") for link in c["links"]], Rule.LINKS),
    ("appContext-on-absolute", lambda c: c["links"][0].update(appContext="x"), Rule.LINKS),
    ("selectionBehavior", lambda c: c.pop("selectionBehavior"), Rule.SELECTION),
    ("selectionBehavior-unknown", lambda c: c.update(selectionBehavior="all"), Rule.SELECTION),
    ("two-recommended-at-most-one", lambda c: c.update(selectionBehavior="at-most-one"), Rule.SELECTION),
    ("suggestion-uuid", lambda c: c["suggestions"][0].pop("uuid"), Rule.SUGGESTIONS),
    ("suggestion-label", lambda c: c["suggestions"][0].pop("label"), Rule.SUGGESTIONS),
    ("action-description", lambda c: c["suggestions"][0]["actions"][0].pop("description"), Rule.ACTIONS),
    ("delete-without-resourceId", lambda c: c["suggestions"][0]["actions"][0].pop("resourceId"), Rule.ACTIONS),
    ("action-type", lambda c: c["suggestions"][0]["actions"][0].update(type="remove"), Rule.ACTIONS),
    ("reason-display", lambda c: c["overrideReasons"][0].pop("display"), Rule.OVERRIDE_REASONS),
    ("null", lambda c: c.update(detail=None), Rule.NOT_EMPTY),
    ("empty-string", lambda c: c["source"].update(icon=""), Rule.NOT_EMPTY),
    ("empty-array", lambda c: c.update(overrideReasons=[]), Rule.NOT_EMPTY),
    ("empty-object", lambda c: c.update(extension={}), Rule.NOT_EMPTY),
]


def test_recorded_card_passes():
    assert response_problems(GOOD) == []
    assert response_problems({"cards": []}) == []


@pytest.mark.parametrize(("change", "rule"), [(b[1], b[2]) for b in BREAKAGES], ids=[b[0] for b in BREAKAGES])
def test_each_breakage_is_caught_by_its_rule(change, rule):
    problems = response_problems(broken(change))
    assert rule in {p.rule for p in problems}, problems
    assert all(str(p).startswith("cards[0]") for p in problems if p.rule is rule)


@pytest.mark.parametrize("body", [None, [], {"cards": None}, {"cards": {}}, {"systemActions": []}])
def test_wrong_shapes(body):
    assert [p.rule for p in response_problems(body)] == [Rule.SHAPE]


def test_system_actions_are_checked():
    problems = response_problems({"cards": [], "systemActions": [{"type": "update"}]})
    assert [str(p) for p in problems] == ["systemActions[0].description: required"]
    assert response_problems({"cards": [], "systemActions": []})[0].rule is Rule.NOT_EMPTY
