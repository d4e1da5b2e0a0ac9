"""Property-based tests (hypothesis): the matching engine and the HTTP layer.

Example counts come from the hypothesis profile in conftest.py (larger on CI, still bounded).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service import ENGINE_KEY, create_app
from cds_service.engine import Engine
from cds_service.hookrequest import HookRequest
from cds_service.matching import Matcher, ReasonKind
from cds_service.services import SERVICES
from cds_service.terminology import SYSTEM_BY_KEY
from tests.conftest import SELECT, SIGN, assert_valid_response, hook_request, service_request

# Built at import, before the per-test storage fixtures: give it a data directory of its own so
# the hypothesis examples never write to the user's default database.
APP = create_app({"base_url": "https://cds.example.org", "data_dir": tempfile.mkdtemp(prefix="cds-properties-")})
ENGINE: Engine = APP.extensions[ENGINE_KEY]
(POLICY,) = ENGINE.policies
MATCHER = Matcher(ENGINE.policies)
TRIGGERS = [rule for rule in POLICY.codes if not rule.requires_text]
POLICY_CODES = {rule.code.upper() for rule in POLICY.codes}

# --- strategies -------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=25,
)


def any_case(text: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(text), max_size=len(text)).map(
        lambda upper: "".join(c.upper() if u else c.lower() for c, u in zip(text, upper, strict=True))
    )


padding = st.sampled_from(["", " ", "\t", "  ", "\n"])


@st.composite
def spelled_system(draw: st.DrawFn, system: object) -> str:
    """Any alias of ``system`` (URI or OID), with http/https, a trailing slash, any case, padding."""
    alias = draw(st.sampled_from(sorted(key for key, value in SYSTEM_BY_KEY.items() if value is system)))
    if alias.startswith("http://") and draw(st.booleans()):
        alias = "https://" + alias.removeprefix("http://")
    if draw(st.booleans()):
        alias += "/"
    return draw(padding) + draw(any_case(alias)) + draw(padding)


# Near misses on purpose: fire/wire/require, lower-case "ire", IRES, PFA-100, reversible
# electroporation (gene delivery), ECT (electroconvulsive), a timestamp holding "0601T".
INNOCENT_WORDS = """
    CT abdomen pelvis with contrast MRI liver tumor biopsy microwave radiofrequency ablation cryoablation
    fire wire require ire Ire IRES IRE1 PFA-100 PFAS platelet function paraformaldehyde reversible
    electroporation gene delivery ECT electroconvulsive therapy pulsed field knife nano stent catheter
    0600 T 20260601T100000Z
"""
innocent_words = st.sampled_from(INNOCENT_WORDS.split())
_TRIGGER_TEXT = re.compile(
    "|".join(r"[\s\-\u2010-\u2015]+".join(map(re.escape, p.split())) for p in POLICY.text.phrases), re.IGNORECASE
)
_ACRONYM = re.compile(r"(?<!\w)(?:IRE|PFA|H-FIRE)(?!\w|-\d)")


@st.composite
def innocent_text(draw: st.DrawFn) -> str:
    """Order text naming no policy phrase and no policy acronym (checked, not assumed)."""
    words = draw(st.lists(innocent_words | st.text(max_size=12), min_size=1, max_size=8))
    text = draw(st.sampled_from([" ", "-", "  "])).join(words)
    return text if not (_TRIGGER_TEXT.search(text) or _ACRONYM.search(text)) else "CT abdomen"


other_codes = st.text(alphabet="0123456789ABCDEFGHTZ", min_size=1, max_size=8).filter(
    lambda code: code.upper() not in POLICY_CODES
)
other_systems = st.sampled_from(
    ["http://snomed.info/sct", "http://loinc.org", "urn:oid:2.16.840.1.113883.6.96", "urn:example:local", ""]
)


@st.composite
def other_coding(draw: st.DrawFn) -> dict[str, Any]:
    rule = draw(st.sampled_from(POLICY.codes))
    system = draw(other_systems | spelled_system(rule.system))
    coding: dict[str, Any] = {"system": system, "code": draw(other_codes)}
    if draw(st.booleans()):
        coding["display"] = draw(innocent_text())
    return coding


@st.composite
def innocent_order(draw: st.DrawFn) -> dict[str, Any]:
    """A ServiceRequest with neither a policy code nor policy wording anywhere."""
    codings = draw(st.lists(other_coding(), max_size=5))
    if draw(st.booleans()):
        # CPT 93799 alone (unlisted procedure) never triggers without IRE wording.
        codings.append({"system": draw(spelled_system(POLICY.codes[2].system)), "code": "93799"})
    order = service_request("sr-x", code=None, text=draw(innocent_text()))
    order["code"]["coding"] = draw(st.permutations(codings))
    order["orderDetail"] = [{"text": draw(innocent_text())}]
    order["note"] = [{"text": draw(innocent_text())}]
    order["reasonCode"] = [{"text": draw(innocent_text())}]
    order["patientInstruction"] = draw(innocent_text())
    return order


resource_shaped = st.fixed_dictionaries(
    {},
    optional={
        "resourceType": st.just("ServiceRequest") | json_values,
        "id": json_values,
        "code": json_values
        | st.fixed_dictionaries({}, optional={"coding": st.lists(json_values | other_coding()), "text": json_values}),
        "orderDetail": json_values,
        "note": json_values,
        "reasonCode": json_values,
        "patientInstruction": json_values,
    },
)

# --- the matching engine ----------------------------------------------------------------------


@given(
    rule=st.sampled_from(TRIGGERS),
    data=st.data(),
    others=st.lists(other_coding(), max_size=6),
)
def test_a_trigger_code_in_any_spelling_and_position_triggers(rule, data, others):
    code = data.draw(padding) + data.draw(any_case(rule.code)) + data.draw(padding)
    trigger = {"system": data.draw(spelled_system(rule.system)), "code": code}
    position = data.draw(st.integers(min_value=0, max_value=len(others)))
    order = data.draw(innocent_order())
    order["code"]["coding"] = [*others[:position], trigger, *others[position:]]

    (match,) = MATCHER.match(order)
    assert match.policy.id == POLICY.id
    assert any(
        r.kind is ReasonKind.CODE and r.code == rule.code.upper() and r.field == f"code.coding[{position}]"
        for r in match.reasons
    )


@given(order=innocent_order())
def test_an_order_without_a_trigger_never_matches(order):
    assert MATCHER.match(order) == []


@given(value=json_values | resource_shaped)
def test_the_matcher_never_raises_on_any_json_value(value):
    assert isinstance(MATCHER.match(value), list)


TEXT_FIELDS = ["code.text", "display", "orderDetail", "note", "reasonCode", "patientInstruction"]


@st.composite
def order_with_anything(draw: st.DrawFn) -> dict[str, Any]:
    """An order that may carry any policy code (93799 included) and policy wording in any field."""
    order = draw(innocent_order())
    words = [*POLICY.text.phrases, *POLICY.text.acronyms, *POLICY.text.acronym_context]
    for field in draw(st.lists(st.sampled_from(TEXT_FIELDS), max_size=3)):
        word = draw(st.sampled_from(words))
        word = draw(st.sampled_from([word, word.upper(), word.lower()]) | any_case(word))
        text = draw(innocent_text()) + draw(st.sampled_from([" ", "-", "", "\u00e9 "])) + word
        if field == "code.text":
            order["code"]["text"] = text
        elif field == "display":
            order["code"]["coding"].append({"system": "http://snomed.info/sct", "code": "1", "display": text})
        elif field == "patientInstruction":
            order[field] = text
        else:
            order[field] = [{"text": text}]
    if draw(st.booleans()):
        rule = draw(st.sampled_from(POLICY.codes))
        order["code"]["coding"].append({"system": draw(spelled_system(rule.system)), "code": rule.code})
    return order


@given(order=order_with_anything() | resource_shaped)
def test_the_quick_screen_never_drops_an_order_the_full_match_takes(order):
    """``Matcher.match`` screens orders before working out reasons; the screen may let through
    orders that do not match, never hold back one that does."""
    assert MATCHER.match(order) == MATCHER._match_fully(order)


@given(resources=st.lists(resource_shaped | json_values.filter(lambda v: isinstance(v, dict)), max_size=4))
def test_the_engine_never_raises_and_always_answers_with_valid_cards(resources):
    orders = [{"resourceType": "ServiceRequest", "id": f"sr-{n}", **r} for n, r in enumerate(resources)]
    for service in SERVICES:
        body = hook_request(*orders, hook=service.hook.value, selections=[f"ServiceRequest/sr-{n}" for n in range(2)])
        evaluation = ENGINE.evaluate(service, HookRequest.model_validate(body), "https://cds.example.org")
        assert_valid_response(evaluation.response)


# --- the HTTP layer ---------------------------------------------------------------------------

PATHS = [SIGN, SELECT, f"{SIGN}/feedback", f"{SELECT}/feedback"]
VALID_BODIES = [
    hook_request(service_request("sr-1", code="0600T"), hook="order-select", selections=["ServiceRequest/sr-1"]),
    {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-26T10:00:00Z"}]},
]
HOSTILE_STRINGS = st.sampled_from(
    ["", "\x00", "\ud800", "\udfff x", "\u202e\u0645\u0631\u062d\u0628\u0627", "🩺" * 50, "'; DROP TABLE", "%s%n"]
)
HUGE = st.sampled_from([10_000, 1_000_000]).map(lambda n: "x" * n)


def deep(depth: int) -> Any:
    value: Any = "leaf"
    for n in range(depth):
        value = [value] if n % 2 else {"k": value}
    return value


hostile_values = (
    json_values | HOSTILE_STRINGS | HUGE | st.sampled_from([50, 400]).map(deep) | st.sampled_from([-1, 2**70, 1e308])
)


def paths_in(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths_in(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths_in(child, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    """A valid body with a few fields deleted or replaced by wrong types, nulls, huge or deep values."""
    body = json.loads(json.dumps(draw(st.sampled_from(VALID_BODIES))))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(paths_in(body)))
        if not path:
            return draw(hostile_values)
        *parents, last = path
        parent = body
        for key in parents:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[last]
        else:
            parent[last] = draw(hostile_values)
    return body


def duplicate_keys(body: Any) -> str:
    """The body's JSON text with its first key repeated with another value (RFC 8259 allows it)."""
    if not isinstance(body, dict) or not body:
        return json.dumps(body)
    key = next(iter(body))
    return "{" + json.dumps(key) + ': "duplicate", ' + json.dumps(body)[1:]


raw_bodies = st.one_of(
    json_values.map(json.dumps),
    mutated().map(json.dumps),
    mutated().map(duplicate_keys),
    st.binary(max_size=200),
    st.sampled_from([1000, 100_000]).map(lambda n: "[" * n + "]" * n),
    st.sampled_from([4300, 4301, 100_000]).map(lambda n: '{"hook": ' + "7" * n + "}"),
    st.sampled_from(["NaN", "-Infinity", "1e999999", '{"hook": NaN}', '"\\ud800"', "\ufeff{}", "{}" * 3]),
)


def assert_json_answer(response: Any) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    body = json.loads(response.get_data())
    if response.status_code != 200:
        assert body["resourceType"] == "OperationOutcome"
        assert isinstance(body["issue"][0]["diagnostics"], str)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(path=st.sampled_from(PATHS), body=raw_bodies)
def test_hostile_bodies_never_cause_a_5xx_and_always_get_json(path, body):
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    with APP.test_client() as client:
        assert_json_answer(client.post(path, data=data, content_type="application/json"))


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(path=st.sampled_from(PATHS), body=mutated())
def test_mutated_requests_get_a_card_answer_or_a_json_error(path, body):
    with APP.test_client() as client:
        response = client.post(path, data=json.dumps(body), content_type="application/json")
    assert_json_answer(response)
    if response.status_code == 200 and not path.endswith("/feedback"):
        assert_valid_response(response.json)


offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)


@given(moment=st.datetimes(timezones=offsets), path=st.sampled_from(PATHS[2:]))
def test_any_rfc3339_feedback_timestamp_gets_an_answer_not_a_5xx(moment, path):
    """Year 1 with a positive offset has no UTC equivalent in Python: a 400, never a crash."""
    body = {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": moment.isoformat()}]}
    with APP.test_client() as client:
        response = client.post(path, json=body)
    assert_json_answer(response)
    assert (response.status_code == 200) == (1900 <= moment.year <= 2999), response.json
