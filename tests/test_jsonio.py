"""JSON in and out: the orjson path against the standard library it stands in for."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds_service import create_app
from cds_service.jsonio import loads, nesting_exceeds
from tests.conftest import SIGN, hook_request, service_request

IRE = service_request("sr-ire", code="0600T", text="IRE of liver tumour")


def depth(value: object) -> int:
    """The reference: how deep containers nest (a scalar is 0, ``[]`` is 1)."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


# Strings full of what could confuse a byte-level scan: brackets, quotes, backslashes, escapes.
tricky_text = st.text(alphabet='[]{}"\\/ a\u00e9\u2028\U0001fa7a', max_size=8)
documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | tricky_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(tricky_text, children, max_size=4),
    max_leaves=30,
)


@given(document=documents, limit=st.integers(min_value=1, max_value=14), ascii_only=st.booleans())
def test_nesting_depth_from_the_bytes_equals_the_depth_of_the_decoded_tree(document, limit, ascii_only):
    raw = json.dumps(document, ensure_ascii=ascii_only).encode()
    assert nesting_exceeds(raw, limit) == (depth(document) > limit)


@pytest.mark.parametrize(
    ("raw", "deeper_than_2"),
    [
        (b'{"a": [[1]]}', True),
        (b'{"a": "[[[[[["}', False),
        (b'{"a": "\\"[[[", "b": ["\\\\"]}', False),
        (b'{"a\\\\": [{"b": "]]]}}}"}]}', True),
        (b'[["\\u005b\\u005b"], []]', False),
    ],
)
def test_brackets_in_strings_and_escapes_do_not_count(raw, deeper_than_2):
    assert nesting_exceeds(raw, 2) is deeper_than_2


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1}',
        b'\xef\xbb\xbf{"bom": true}',
        '{"utf16": "\u00e9"}'.encode("utf-16"),
        '{"utf32": [1]}'.encode("utf-32"),
        b'{"a": NaN, "b": Infinity, "c": 1e999}',
        b'{"lone": "\\ud800"}',
        b'{"lone, as bytes": "\xed\xa0\x80"}',
    ],
)
def test_what_the_standard_library_accepts_is_still_accepted(raw):
    expected = json.loads(raw)
    value, utf8 = loads(raw)
    assert json.dumps(value) == json.dumps(expected)  # NaN-safe comparison
    assert nesting_exceeds(utf8, 64) == (depth(expected) > 64)


@pytest.mark.parametrize("raw", [b"{", b'{"a": 1} x', b'{"a": tru}', b"\xff\xfe\xfd", b"[" * 5000 + b"]" * 5000])
def test_malformed_input_raises_what_json_loads_raises(raw):
    with pytest.raises((json.JSONDecodeError, UnicodeDecodeError, RecursionError)) as expected:
        json.loads(raw)
    with pytest.raises(expected.type):
        loads(raw)


@given(value=st.dictionaries(st.text(max_size=6), st.integers() | st.text(max_size=6) | st.booleans(), max_size=5))
def test_the_fast_path_decodes_like_json_loads(value: dict[str, Any]):
    raw = json.dumps(value, ensure_ascii=False).encode()
    decoded, utf8 = loads(raw)
    assert decoded == value and utf8 is raw


def test_responses_are_compact_utf8_json_in_insertion_order(client):
    label = "IRE of liver tumour \u2014 caf\u00e9"
    body = hook_request(service_request("sr-ire", code="0600T", text=label))
    response = client.post(SIGN, json=body)
    assert response.status_code == 200 and response.mimetype == "application/json"
    text = response.get_data(as_text=True)
    card = response.json["cards"][0]
    assert list(card)[:3] == ["uuid", "summary", "indicator"]
    assert ", " not in text[:40] and '": ' not in text[:40]  # compact separators
    assert "caf\u00e9".encode() in response.data and "\\u" not in text  # UTF-8, not ASCII escapes
    # Errors go through the same provider.
    error = create_app().test_client().post(SIGN, data=b"{", content_type="application/json")
    assert error.status_code == 400 and error.json["resourceType"] == "OperationOutcome"


def test_a_lone_surrogate_echoed_in_a_card_is_written_as_an_escape(client):
    raw = json.dumps(hook_request(dict(IRE, id="sr-\ud800"))).encode()
    response = client.post(SIGN, data=raw, content_type="application/json")
    assert response.status_code == 200
    assert b"sr-\\ud800" in response.data
    (action,) = json.loads(response.data)["cards"][0]["suggestions"][0]["actions"]
    assert action["resourceId"] == "ServiceRequest/sr-\ud800"
