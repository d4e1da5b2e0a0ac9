"""JSON in and out of the HTTP layer: orjson on the common path, the standard library's leniency
behind it, and a nesting-depth check that runs on the bytes.

Every hook call decodes a body and encodes an answer, and under load these were among the larger
parts of a call beyond the web framework (bench/RESULTS.md): orjson decodes realistic order-sign
bodies in half the time of :func:`json.loads`.

- **Decoding.** orjson accepts exactly RFC 8259 JSON in UTF-8. Whatever it refuses goes to
  :func:`json.loads`, so a body the service accepted before is still accepted (a UTF-8 byte order
  mark, UTF-16 or UTF-32, NaN, lone surrogate escapes, nesting past orjson's 1024 levels), and a
  malformed body is described in the standard library's words. One difference remains: orjson
  reads an integer beyond 64 bits as a float. No CDS Hooks or FHIR R4 integer comes near that
  (FHIR's ``integer`` is 32-bit, ``integer64`` is 64-bit).
- **Depth.** :func:`nesting_exceeds` works on the request bytes with a handful of C-level byte
  operations instead of visiting every decoded container in Python.
- **Encoding.** :class:`OrjsonProvider` is Flask's JSON provider with orjson's encoder: compact,
  keys in insertion order, UTF-8 rather than ``\\u`` escapes (RFC 8259 section 8.1); what orjson
  refuses to write (a lone surrogate echoed from such a body) goes to :func:`json.dumps`.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import orjson
from flask import Response
from flask.json.provider import DefaultJSONProvider

# Structure characters of a JSON text: both kinds of opening bracket become "(", closing ")".
_AS_PARENS = bytes.maketrans(b"[]{}", b"()()")
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'[]{}"'))
_NOT_BRACKET = bytes(set(range(256)) - set(b"[]{}"))


def nesting_exceeds(document: bytes, limit: int) -> bool:
    """Whether the containers of ``document`` (valid JSON in UTF-8) nest more than ``limit`` deep.

    Brackets inside strings do not count. Escapes go first (``\\\\`` then ``\\"``), so every
    quote left delimits a string. Usually no string holds a bracket: keeping only brackets and
    quotes then leaves each string as ``""``, and dropping those leaves the structure. Otherwise the
    text is split at the quotes and the strings dropped exactly. Each pass of ``replace(b"()")``
    removes the innermost containers, so the number of passes is the depth.
    """
    if b"\\" in document:
        document = document.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = document.translate(_AS_PARENS, _NOT_STRUCTURE)
    if len(skeleton) <= limit:  # fewer brackets than the limit (counting them costs more)
        return False
    skeleton = skeleton.replace(b'""', b"")
    if b'"' in skeleton:  # a string holds a bracket
        skeleton = b"".join(document.split(b'"')[::2]).translate(_AS_PARENS, _NOT_BRACKET)
    for _ in range(limit):
        if not skeleton:
            return False
        skeleton = skeleton.replace(b"()", b"")
    return bool(skeleton)


def loads(raw: bytes) -> tuple[Any, bytes]:
    """The decoded document, and the same text as UTF-8 bytes for :func:`nesting_exceeds`.

    Raises what :func:`json.loads` raises (``JSONDecodeError``, ``UnicodeDecodeError``,
    ``RecursionError``, ``ValueError``) when neither decoder accepts ``raw``.
    """
    try:
        return orjson.loads(raw), raw
    except orjson.JSONDecodeError:
        pass
    value = json.loads(raw)
    # Accepted only by the standard library: its text, re-encoded as UTF-8 (lone surrogates kept).
    text = raw.decode(json.detect_encoding(raw), "surrogatepass")  # as json.loads decodes bytes
    return value, text.encode("utf-8", "surrogatepass")


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON provider with orjson's encoder; Flask's own default covers other types."""

    _OPTIONS: ClassVar[int] = orjson.OPT_NON_STR_KEYS

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs:  # indent, sort_keys, ...: orjson has no such options; Flask's own encoder does
            return super().dumps(obj, **kwargs)
        return self._encode(obj).decode()

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(self._encode(obj), mimetype=self.mimetype)

    def _encode(self, obj: Any) -> bytes:
        try:
            return orjson.dumps(obj, default=self.default, option=self._OPTIONS)
        except orjson.JSONEncodeError:
            # What orjson cannot write and the standard library can: a lone surrogate echoed from
            # a body only json.loads would read (as a \u escape), an integer beyond 64 bits.
            return json.dumps(obj, default=self.default, separators=(",", ":")).encode()
