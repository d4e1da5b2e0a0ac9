"""Work the engine does only when it is needed: card links and per-call card texts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cds_service import create_app
from cds_service.config import data_dir
from cds_service.engine import Engine
from cds_service.hookrequest import parse_hook_request
from cds_service.policy import PolicyError, load_policies
from cds_service.services import SERVICES_BY_ID
from tests.conftest import SIGN, assert_valid_response, hook_request, service_request

SIGN_SERVICE = SERVICES_BY_ID["medical-policy-order-sign"]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(load_policies(data_dir("policies")), data_dir("cards"), "Example Health")


@pytest.fixture
def cards_dir(tmp_path: Path) -> Path:
    cards = tmp_path / "cards"
    shutil.copytree(data_dir("cards"), cards)
    return cards


def edit_card(cards: Path, **fields: str) -> None:
    path = cards / "investigational.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(fields)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_the_base_url_is_worked_out_only_when_a_card_is_built(engine):
    asked: list[str] = []

    def base_url() -> str:
        asked.append("asked")
        return "https://cds.example.org"

    plain = parse_hook_request(hook_request(service_request(code="74177", text="CT abdomen")))
    assert engine.evaluate(SIGN_SERVICE, plain, base_url).response == {"cards": []}
    assert asked == []
    ire = parse_hook_request(hook_request(service_request(code="0600T", text="IRE of pancreas")))
    (card,) = engine.evaluate(SIGN_SERVICE, ire, base_url).response["cards"]
    assert asked == ["asked"]
    assert card["links"][0]["url"] == "https://cds.example.org/evidence/SURG.00126"


def test_a_plain_string_base_url_still_works(engine):
    ire = parse_hook_request(hook_request(service_request(code="0600T")))
    (card,) = engine.evaluate(SIGN_SERVICE, ire, "https://cds.example.org").response["cards"]
    assert card["source"]["url"].startswith("https://cds.example.org/evidence/SURG.00126")


def test_order_free_texts_are_fixed_and_texts_naming_orders_follow_each_call(cards_dir):
    edit_card(
        cards_dir,
        source_label="{{ payer }} policy {{ policy.id }} ({{ orders | length }} order(s))",
    )
    client = create_app({"cards_dir": cards_dir, "payer_name": "Example Health"}).test_client()
    for count in (1, 2):
        orders = [service_request(f"sr-{i}", code="0600T") for i in range(count)]
        response = client.post(SIGN, json=hook_request(*orders))
        assert_valid_response(response.json)
        (card,) = response.json["cards"]
        assert card["source"]["label"] == f"Example Health policy SURG.00126 ({count} order(s))"
        assert card["links"][0]["label"].startswith("Evidence summary: ")


def test_a_broken_order_free_text_still_stops_start_up(cards_dir):
    edit_card(cards_dir, source_label="{{ policy.no_such_field }}")
    with pytest.raises(PolicyError, match="template error"):
        create_app({"cards_dir": cards_dir})
