"""The rules a CDS Hooks 2.0 response body must follow, checked on any JSON (``selfcheck`` and tests).

Sources: CDS Hooks 2.0 "CDS Service Response" (Card, Source, Suggestion, Action, Link attributes),
its JSON conventions ("JSON elements SHALL NOT be null ... SHALL NOT be empty"), and Da Vinci CRD
card rules (resp-3: every suggestion has a uuid; resp-5: source.topic is populated). Two rules
are this project's house rules, stated as such: every card carries a ``uuid`` (without one a
client sends no feedback) and at least one ``absolute`` link (the clinician can read the basis).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

SUMMARY_LIMIT = 140  # Card.summary: "<140-character summary"
INDICATORS = frozenset({"info", "warning", "critical"})
SELECTION_BEHAVIORS = frozenset({"at-most-one", "any"})
ACTION_TYPES = frozenset({"create", "update", "delete"})
LINK_TYPES = frozenset({"absolute", "smart"})


class Rule(StrEnum):
    """The rules, in the words a pass/fail table shows."""

    SHAPE = "the body is an object with a cards array"
    NOT_EMPTY = "no nulls, empty strings, empty arrays or empty objects"
    SUMMARY = "summary present and under 140 characters"
    INDICATOR = "indicator is info, warning or critical"
    SOURCE = "source.label present, source.url absolute"
    TOPIC = "source.topic set (Da Vinci CRD resp-5)"
    UUID = "every card has a uuid (needed for feedback)"
    LINKS = "links well formed, at least one absolute link"
    SELECTION = "selectionBehavior given with suggestions"
    SUGGESTIONS = "suggestions have a label and a uuid (CRD resp-3)"
    ACTIONS = "actions have a type and description; deletes name resourceId"
    OVERRIDE_REASONS = "overrideReasons have system, code and display"


@dataclass(frozen=True, slots=True)
class Problem:
    rule: Rule
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _empties(value: object, path: str) -> list[Problem]:
    """Nulls, empty strings, arrays and objects anywhere below ``path`` (JSON conventions)."""
    if value is None:
        return [Problem(Rule.NOT_EMPTY, path, "null: SHALL NOT be null; omit the field instead")]
    if value in ("", [], {}):
        return [Problem(Rule.NOT_EMPTY, path, f"empty {type(value).__name__}: SHALL NOT be empty")]
    problems: list[Problem] = []
    if isinstance(value, dict):
        for key, child in value.items():
            problems.extend(_empties(child, f"{path}.{key}"))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            problems.extend(_empties(child, f"{path}[{index}]"))
    return problems


def _text(container: dict[str, Any], key: str) -> str | None:
    value = container.get(key)
    return value if isinstance(value, str) and value.strip() else None


def _is_absolute_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://")) and len(value) > len("https://")


def _objects(
    container: dict[str, Any], key: str, path: str, rule: Rule, problems: list[Problem]
) -> list[tuple[str, dict[str, Any]]]:
    """The objects of an optional array field, each with its path; a malformed array is a problem."""
    value = container.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        problems.append(Problem(rule, f"{path}.{key}", "must be an array of objects"))
        return []
    return [(f"{path}.{key}[{index}]", item) for index, item in enumerate(value)]


def _action_problems(action: dict[str, Any], path: str) -> list[Problem]:
    problems = []
    if action.get("type") not in ACTION_TYPES:
        problems.append(Problem(Rule.ACTIONS, f"{path}.type", f"must be one of {', '.join(sorted(ACTION_TYPES))}"))
    if not _text(action, "description"):
        problems.append(Problem(Rule.ACTIONS, f"{path}.description", "required"))
    if action.get("type") == "delete" and not _text(action, "resourceId"):
        problems.append(Problem(Rule.ACTIONS, f"{path}.resourceId", "a delete SHOULD name the resource it removes"))
    return problems


def _suggestion_problems(card: dict[str, Any], path: str) -> list[Problem]:
    problems: list[Problem] = []
    suggestions = _objects(card, "suggestions", path, Rule.SUGGESTIONS, problems)
    behavior = card.get("selectionBehavior")
    if suggestions and behavior not in SELECTION_BEHAVIORS:
        problems.append(Problem(Rule.SELECTION, f"{path}.selectionBehavior", "required with suggestions"))
    recommended = 0
    for suggestion_path, suggestion in suggestions:
        for key in ("label", "uuid"):
            if not _text(suggestion, key):
                problems.append(Problem(Rule.SUGGESTIONS, f"{suggestion_path}.{key}", "required"))
        recommended += suggestion.get("isRecommended") is True
        for action_path, action in _objects(suggestion, "actions", suggestion_path, Rule.ACTIONS, problems):
            problems.extend(_action_problems(action, action_path))
    if behavior == "at-most-one" and recommended > 1:
        message = "at most one isRecommended with selectionBehavior at-most-one"
        problems.append(Problem(Rule.SELECTION, f"{path}.suggestions", message))
    return problems


def _link_problems(card: dict[str, Any], path: str) -> list[Problem]:
    problems: list[Problem] = []
    links = _objects(card, "links", path, Rule.LINKS, problems)
    for link_path, link in links:
        if not _text(link, "label"):
            problems.append(Problem(Rule.LINKS, f"{link_path}.label", "required"))
        if link.get("type") not in LINK_TYPES:
            problems.append(Problem(Rule.LINKS, f"{link_path}.type", "must be absolute or smart"))
        if not _is_absolute_url(link.get("url")):
            problems.append(Problem(Rule.LINKS, f"{link_path}.url", "must be an absolute http(s) URL"))
        if "appContext" in link and link.get("type") != "smart":
            problems.append(Problem(Rule.LINKS, f"{link_path}.appContext", "only for links of type smart"))
    if not any(link.get("type") == "absolute" and _is_absolute_url(link.get("url")) for _, link in links):
        problems.append(Problem(Rule.LINKS, f"{path}.links", "no absolute link to the basis of the advice"))
    return problems


def _source_problems(card: dict[str, Any], path: str) -> list[Problem]:
    source = card.get("source")
    if not isinstance(source, dict) or not _text(source, "label"):
        return [Problem(Rule.SOURCE, f"{path}.source.label", "required")]
    problems = []
    if "url" in source and not _is_absolute_url(source["url"]):
        problems.append(Problem(Rule.SOURCE, f"{path}.source.url", "must be an absolute URL"))
    topic = source.get("topic")
    if not isinstance(topic, dict) or not _text(topic, "system") or not _text(topic, "code"):
        problems.append(Problem(Rule.TOPIC, f"{path}.source.topic", "must be a Coding with system and code"))
    return problems


def card_problems(card: dict[str, Any], path: str) -> list[Problem]:
    """Everything wrong with one card."""
    problems: list[Problem] = []
    summary = _text(card, "summary")
    if summary is None:
        problems.append(Problem(Rule.SUMMARY, f"{path}.summary", "required"))
    elif len(summary) >= SUMMARY_LIMIT:
        message = f"{len(summary)} characters; must be under {SUMMARY_LIMIT}"
        problems.append(Problem(Rule.SUMMARY, f"{path}.summary", message))
    if card.get("indicator") not in INDICATORS:
        problems.append(Problem(Rule.INDICATOR, f"{path}.indicator", "must be info, warning or critical"))
    if not _text(card, "uuid"):
        problems.append(Problem(Rule.UUID, f"{path}.uuid", "missing: the client cannot send feedback"))
    problems.extend(_source_problems(card, path))
    problems.extend(_suggestion_problems(card, path))
    problems.extend(_link_problems(card, path))
    for reason_path, reason in _objects(card, "overrideReasons", path, Rule.OVERRIDE_REASONS, problems):
        for key in ("system", "code", "display"):  # display: "the CDS Service MUST populate a display"
            if not _text(reason, key):
                problems.append(Problem(Rule.OVERRIDE_REASONS, f"{reason_path}.{key}", "required"))
    return problems


def response_problems(body: object) -> list[Problem]:
    """Everything wrong with a hook response body; an empty list means it conforms."""
    if not isinstance(body, dict) or not isinstance(body.get("cards"), list):
        return [Problem(Rule.SHAPE, "response", "must be a JSON object with a cards array")]
    problems: list[Problem] = []
    for key, value in body.items():
        if not (key == "cards" and value == []):  # the one empty value the spec allows
            problems.extend(_empties(value, key))
    for index, card in enumerate(body["cards"]):
        if isinstance(card, dict):
            problems.extend(card_problems(card, f"cards[{index}]"))
        else:
            problems.append(Problem(Rule.SHAPE, f"cards[{index}]", "must be an object"))
    for action_path, action in _objects(body, "systemActions", "response", Rule.ACTIONS, problems):
        problems.extend(_action_problems(action, action_path.removeprefix("response.")))
    return problems
