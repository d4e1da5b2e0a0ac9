"""Prefetch template tokens, replaced exactly as CDS Hooks 2.0 "Prefetch tokens" describes.

A token "MUST be delimited by {{ and }}, and MUST contain only the qualified path to a hook
context field or one of the following user identifiers: userPractitionerId,
userPractitionerRoleId, userPatientId, or userRelatedPersonId"; only "root-level fields with a
primitive value" of the context are eligible. The user identifiers are the id part of
``context.userId`` when it names a resource of that type. FHIRPath (``today()``, ``.resolve()``)
belongs to the 3.0 ballot, not 2.0.

A template whose tokens cannot all be replaced yields no query: the service must not run a
different query from the one it advertised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote

_TOKEN = re.compile(r"\{\{(.*?)\}\}")
_CONTEXT_FIELD = re.compile(r"^context\.([A-Za-z][A-Za-z0-9_]*)$")

# CDS Hooks 2.0 "Prefetch tokens", the user identifiers: token -> the resource type of userId.
USER_TOKENS: Mapping[str, str] = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


class _Unresolvable(Exception):
    """A token this request cannot fill."""


def _primitive(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float) and str(value):
        return str(value)
    raise _Unresolvable


def _token_value(token: str, context: Mapping[str, object]) -> str:
    field = _CONTEXT_FIELD.match(token)
    if field:
        return _primitive(context.get(field.group(1)))
    resource_type = USER_TOKENS.get(token)
    user = context.get("userId")
    if resource_type and isinstance(user, str):
        kind, _, user_id = user.strip().rpartition("/")
        if kind.rpartition("/")[2] == resource_type and user_id:
            return user_id
    raise _Unresolvable


def resolve_template(template: str, context: Mapping[str, object]) -> str | None:
    """The query ``template`` names for this hook context, or None if a token cannot be filled.

    Replaced values are percent-encoded, so an id can neither add query parameters nor change
    the path (a valid FHIR id has only unreserved characters and is left as it is).
    """

    def replace(match: re.Match[str]) -> str:
        return quote(_token_value(match.group(1), context), safe="")

    try:
        query = _TOKEN.sub(replace, template)
    except _Unresolvable:
        return None
    if "{{" in query or "}}" in query:
        return None  # an unbalanced delimiter is not a token we know how to fill
    return query
