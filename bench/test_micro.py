"""In-process micro-benchmarks (pytest-benchmark), run by ``bench/run``, not by the test suite.

They split one hook call into its stages (JSON decoding, the pydantic envelope, FHIR validation,
matching, card building, the whole engine) so that a regression in the load test shows where it
comes from. Two groups demonstrate the matching engine's scaling claims:

- ``codings``: one order with 1, 10, 100 and 1000 codings. The cost per coding should stay
  constant (linear growth).
- ``policy-codes``: the same order against the real policy and against copies listing 10x and
  100x as many codes. The cost should not change (hash look-ups, not a scan of the code list).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bench.payloads import CATALOGUE, IRE_ORDER, Payload, all_payloads, make_payload
from cds_service import jsonio
from cds_service.config import data_dir
from cds_service.engine import Engine
from cds_service.fhircheck import fhir_problems
from cds_service.hookrequest import parse_hook_request
from cds_service.matching import Matcher
from cds_service.policy import CodeRule, CodeSystem, Policy, load_policies
from cds_service.services import SERVICES_BY_ID

PAYLOADS = {payload.name: payload for payload in all_payloads()}
ENVELOPE_SIZES = ("sign-1", "sign-10-ire", "sign-100-ire")
CODINGS = (1, 10, 100, 1000)
CODE_MULTIPLIERS = (1, 10, 100)


@pytest.fixture(scope="module", autouse=True)
def _quiet() -> Iterator[None]:
    """The engine logs one line per invalid resource; none is expected, and I/O is not measured."""
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


@pytest.fixture(scope="module")
def policies() -> tuple[Policy, ...]:
    return load_policies(data_dir("policies"))


@pytest.fixture(scope="module")
def engine(policies: tuple[Policy, ...]) -> Engine:
    return Engine(policies, data_dir("cards"), "Health plan")


def _orders(payload: Payload) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in payload.body["context"]["draftOrders"]["entry"]]


@pytest.mark.parametrize("name", ENVELOPE_SIZES)
def test_json_decode(benchmark: BenchmarkFixture, name: str) -> None:
    """The request body as the hook endpoint decodes it (orjson, the standard library behind it)."""
    benchmark.group = "request parsing"
    raw = PAYLOADS[name].encoded()
    benchmark(jsonio.loads, raw)


@pytest.mark.parametrize("name", ENVELOPE_SIZES)
def test_json_decode_stdlib(benchmark: BenchmarkFixture, name: str) -> None:
    """For comparison: json.loads, which decoded every body before."""
    benchmark.group = "request parsing"
    raw = PAYLOADS[name].encoded()
    benchmark(json.loads, raw)


@pytest.mark.parametrize("name", ENVELOPE_SIZES)
def test_depth_check(benchmark: BenchmarkFixture, name: str) -> None:
    """The JSON nesting limit (CDS_MAX_JSON_DEPTH), worked out from the request bytes."""
    benchmark.group = "request parsing"
    raw = PAYLOADS[name].encoded()
    assert not jsonio.nesting_exceeds(raw, 64)
    benchmark(jsonio.nesting_exceeds, raw, 64)


@pytest.mark.parametrize("name", ENVELOPE_SIZES)
def test_envelope(benchmark: BenchmarkFixture, name: str) -> None:
    benchmark.group = "request parsing"
    body = json.loads(PAYLOADS[name].encoded())
    benchmark(parse_hook_request, body)


def test_fhir_validation_one_order(benchmark: BenchmarkFixture, engine: Engine) -> None:
    """fhir.resources on one realistic ServiceRequest, every time (no verdict cache)."""
    benchmark.group = "fhir validation"
    (order,) = _orders(make_payload(1, ire=False))
    benchmark(fhir_problems, order)


def test_fhir_validation_one_order_repeat(benchmark: BenchmarkFixture, engine: Engine) -> None:
    """The same order seen again: the verdict comes from the cache (fingerprint + look-up)."""
    benchmark.group = "fhir validation"
    (order,) = _orders(make_payload(1, ire=False))
    benchmark(engine.fhir.problems, order)


@pytest.mark.parametrize("ire", [False, True], ids=["plain", "ire"])
def test_match_one_order(benchmark: BenchmarkFixture, engine: Engine, ire: bool) -> None:
    benchmark.group = "matching"
    (order,) = _orders(make_payload(1, ire=ire))
    assert bool(engine.matcher.match(order)) is ire
    benchmark(engine.matcher.match, order)


def test_cards_one_match(benchmark: BenchmarkFixture, engine: Engine) -> None:
    benchmark.group = "cards"
    (order,) = _orders(make_payload(1, ire=True))
    (match,) = engine.matcher.match(order)
    benchmark(engine.cards.build, match.policy, [match], "https://cds.example.org")


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_engine(benchmark: BenchmarkFixture, engine: Engine, name: str) -> None:
    """The whole pipeline after JSON decoding, as the hook endpoint runs it (verdicts cached)."""
    benchmark.group = "engine"
    payload = PAYLOADS[name]
    request = parse_hook_request(json.loads(payload.encoded()))
    service = SERVICES_BY_ID[payload.service]
    assert len(engine.evaluate(service, request, "https://cds.example.org").response["cards"]) == int(payload.ire)
    benchmark(engine.evaluate, service, request, "https://cds.example.org")


def order_with_codings(count: int) -> dict[str, Any]:
    """An order whose code carries ``count`` codings, one of them the IRE CPT code."""
    codings = [
        {"system": "http://www.ama-assn.org/go/cpt", "code": item.cpt, "display": item.display}
        for item in (CATALOGUE[i % len(CATALOGUE)] for i in range(count - 1))
    ]
    codings.insert(count // 2, {"system": "http://www.ama-assn.org/go/cpt", "code": "0600T", "display": "Ablation"})
    return {"resourceType": "ServiceRequest", "id": "sr-many", "code": {"coding": codings, "text": IRE_ORDER.text}}


@pytest.mark.parametrize("count", CODINGS)
def test_match_codings(benchmark: BenchmarkFixture, policies: tuple[Policy, ...], count: int) -> None:
    benchmark.group = "codings"
    benchmark.extra_info["codings"] = count
    matcher = Matcher(policies)
    order = order_with_codings(count)
    assert matcher.match(order)
    benchmark(matcher.match, order)


def with_extra_codes(policy: Policy, multiplier: int) -> Policy:
    """The policy listing ``multiplier`` times as many codes (synthetic CPT and ICD-10-PCS codes)."""
    extra = [
        CodeRule(system=system, code=f"Z{index:05d}{suffix}", display=f"Synthetic code {index}")
        for index in range(len(policy.codes) * (multiplier - 1) // 2)
        for system, suffix in ((CodeSystem.CPT, "T"), (CodeSystem.ICD10PCS, "ZF"))
    ]
    return policy.model_copy(update={"codes": [*policy.codes, *extra]})


@pytest.mark.parametrize("multiplier", CODE_MULTIPLIERS)
def test_match_policy_codes(benchmark: BenchmarkFixture, policies: tuple[Policy, ...], multiplier: int) -> None:
    benchmark.group = "policy-codes"
    grown = tuple(with_extra_codes(policy, multiplier) for policy in policies)
    benchmark.extra_info["policy_codes"] = sum(len(p.codes) for p in grown)
    matcher = Matcher(grown)
    order = order_with_codings(10)
    assert matcher.match(order)
    benchmark(matcher.match, order)
