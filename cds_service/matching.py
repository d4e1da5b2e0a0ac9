"""The matching engine: which policies an order falls under, and why.

It works on plain JSON (the ``ServiceRequest`` exactly as the client sent it), so a resource that
fails FHIR validation is still examined, and it never raises on any JSON value. Everything costly
is built once at start-up: a hash index of (code system, code) for every policy code, one
compiled pattern holding every policy's phrases and acronyms, and the words a quick screen looks
for. Matching one order is then one dict look-up per coding plus, for the text, a few substring
tests and the pattern only where one of those words is present, independent of how many codes
the policies list. Reasons and field paths are worked out only for orders that pass the screen.

Text rules, and why:
- Phrases (``irreversible electroporation``, ``NanoKnife``) match case-insensitively on word
  boundaries, with any run of spaces or hyphens between words.
- Acronyms (``IRE``, ``PFA``) match only upper case, as whole tokens, not followed by ``-<digit>``
  (the PFA-100 platelet test), and only when a context word (``ablation``, ``tumor``, ...) appears
  in the same order's text: alone they also mean paraformaldehyde or iron-responsive element.
- Only the text that says *what is ordered* (``code.text``, coding displays, ``orderDetail``)
  triggers on its own. Notes, reasons and patient instructions often describe history ("prior IRE
  of the liver") on an unrelated order, so they only support a code that needs text to count
  (CPT 93799 "unlisted cardiovascular procedure").
- Codes are compared exactly (after trimming and upper-casing) against ``Coding.code``; free text
  is never searched for codes, so ``20260601T100000Z`` does not read as CPT 0601T.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cds_service.policy import CodeRule, CodeSystem, Policy
from cds_service.terminology import DISPLAY_NAME, code_system_for, normalise_code

# Word separators inside a phrase: whitespace, ASCII hyphen and the Unicode dashes U+2010..U+2015.
_SEP = r"[\s\-\u2010-\u2015]+"


class ReasonKind(StrEnum):
    CODE = "code"
    CODE_WITH_TEXT = "code-with-text"
    TEXT = "text"


@dataclass(frozen=True, slots=True)
class Reason:
    """One piece of evidence that an order falls under a policy."""

    kind: ReasonKind
    field: str
    system: str | None = None
    code: str | None = None
    display: str | None = None
    phrase: str | None = None


@dataclass(frozen=True, slots=True)
class OrderMatch:
    """An order that falls under a policy, with every reason found."""

    policy: Policy
    resource_type: str
    resource_id: str | None
    label: str
    reasons: tuple[Reason, ...]

    @property
    def reference(self) -> str | None:
        return f"{self.resource_type}/{self.resource_id}" if self.resource_id else None


@dataclass(frozen=True, slots=True)
class _TextHit:
    policy: Policy
    phrase: str
    field: str
    is_acronym: bool


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _as_dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _codings(concept: object, path: str) -> Iterator[tuple[str, dict[str, object]]]:
    for index, coding in enumerate(_as_list(_as_dict(concept).get("coding"))):
        if isinstance(coding, dict):
            yield f"{path}.coding[{index}]", coding


def _code_key(coding: dict[str, object]) -> tuple[CodeSystem, str] | None:
    """(code system, code) as the policy index holds them, or None for a system we do not know."""
    system = code_system_for(coding.get("system"))
    code = normalise_code(coding.get("code"))
    return None if system is None or code is None else (system, code)


def _concept_texts(concept: object, path: str) -> Iterator[tuple[str, str]]:
    text = _text(_as_dict(concept).get("text"))
    if text:
        yield f"{path}.text", text
    for coding_path, coding in _codings(concept, path):
        display = _text(coding.get("display"))
        if display:
            yield f"{coding_path}.display", display


def _primary_concepts(resource: dict[str, object]) -> Iterator[tuple[object, str]]:
    """The concepts whose text says what is being ordered, with their paths."""
    yield resource.get("code"), "code"
    for index, detail in enumerate(_as_list(resource.get("orderDetail"))):
        yield detail, f"orderDetail[{index}]"


def _primary_texts(resource: dict[str, object]) -> Iterator[tuple[str, str]]:
    """Text that says what is being ordered."""
    for concept, path in _primary_concepts(resource):
        yield from _concept_texts(concept, path)


def _concept_strings(concept: object) -> list[str]:
    """A concept's text and coding displays, without their paths (for the quick screen)."""
    concept = _as_dict(concept)
    found = [text] if isinstance(text := concept.get("text"), str) else []
    for coding in _as_list(concept.get("coding")):
        if isinstance(coding, dict) and isinstance(display := coding.get("display"), str):
            found.append(display)
    return found


def _supporting_texts(resource: dict[str, object]) -> Iterator[tuple[str, str]]:
    """Text around the order: enough to qualify an unlisted code, not enough on its own."""
    for index, note in enumerate(_as_list(resource.get("note"))):
        text = _text(_as_dict(note).get("text"))
        if text:
            yield f"note[{index}].text", text
    for index, reason in enumerate(_as_list(resource.get("reasonCode"))):
        yield from _concept_texts(reason, f"reasonCode[{index}]")
    instruction = _text(resource.get("patientInstruction"))
    if instruction:
        yield "patientInstruction", instruction


def order_label(resource: dict[str, object]) -> str:
    """What a clinician would call the order: its text, else a coding's display or code."""
    code = _as_dict(resource.get("code"))
    text = _text(code.get("text"))
    if text:
        return text.strip()
    for _, coding in _codings(code, "code"):
        display = _text(coding.get("display")) or _text(coding.get("code"))
        if display:
            return display.strip()
    resource_id = _text(resource.get("id"))
    return f"{resource.get('resourceType')}/{resource_id}" if resource_id else "unnamed order"


def _phrase_pattern(phrase: str) -> str:
    words = re.split(_SEP, phrase.strip())
    return "(?i:" + _SEP.join(re.escape(word) for word in words) + ")"


def _phrase_key(text: str) -> str:
    return " ".join(re.split(_SEP, text.strip().lower()))


class Matcher:
    """Finds the policies an order falls under. Immutable after construction; share it freely."""

    def __init__(self, policies: Sequence[Policy]) -> None:
        self.policies = tuple(policies)
        self._codes: dict[tuple[CodeSystem, str], list[tuple[Policy, CodeRule]]] = {}
        self._phrases: dict[str, list[Policy]] = {}
        self._acronyms: dict[str, list[Policy]] = {}
        self._context: dict[str, re.Pattern[str]] = {}
        alternatives: set[str] = set()
        for policy in self.policies:
            for rule in policy.codes:
                key = (rule.system, rule.code.strip().upper())
                self._codes.setdefault(key, []).append((policy, rule))
            for phrase in policy.text.phrases:
                self._phrases.setdefault(_phrase_key(phrase), []).append(policy)
                alternatives.add(_phrase_pattern(phrase))
            for acronym in policy.text.acronyms:
                self._acronyms.setdefault(acronym.strip(), []).append(policy)
                alternatives.add(re.escape(acronym.strip()))
            if policy.text.acronym_context:
                words = sorted(policy.text.acronym_context, key=len, reverse=True)
                self._context[policy.id] = re.compile(
                    r"(?<!\w)(?:" + "|".join(_phrase_pattern(w) for w in words) + r")(?!\w)"
                )
        # Longest alternatives first so that "irreversible electroporation" wins over any shorter
        # overlap. Left boundary: not after a word character; right: not before a word character
        # or "-<digit>" (PFA-100).
        ordered = sorted(alternatives, key=len, reverse=True)
        self._pattern = re.compile(r"(?<!\w)(?:" + "|".join(ordered) + r")(?!\w|-\d)")
        # For the quick screen: text the pattern matches holds each phrase's longest word in lower
        # case, or an acronym as written. (True of ASCII text only: Unicode case folding lets the
        # pattern match letters that str.lower() keeps apart, such as the long s and the Kelvin sign.)
        phrases = [phrase for policy in self.policies for phrase in policy.text.phrases]
        self._phrase_words = frozenset(max(re.split(_SEP, p.strip().lower()), key=len) for p in phrases)
        self._acronym_words = frozenset(self._acronyms)

    def _text_hits(self, texts: Iterator[tuple[str, str]]) -> list[_TextHit]:
        hits: list[_TextHit] = []
        for field, text in texts:
            for found in self._pattern.finditer(text):
                matched = found.group(0)
                acronym_policies = self._acronyms.get(matched)
                if acronym_policies is not None:
                    hits.extend(_TextHit(p, matched, field, True) for p in acronym_policies)
                    continue
                for policy in self._phrases.get(_phrase_key(matched), ()):
                    hits.append(_TextHit(policy, matched, field, False))
        return hits

    def _has_context(self, policy: Policy, texts: list[str]) -> bool:
        pattern = self._context.get(policy.id)
        return pattern is not None and any(pattern.search(text) for text in texts)

    def _code_reasons(
        self, resource: dict[str, object], reasons: dict[str, list[Reason]]
    ) -> list[tuple[Policy, CodeRule, str, str]]:
        """Add reasons for codes that count alone; return the ones that need text to count."""
        conditional: list[tuple[Policy, CodeRule, str, str]] = []
        for path, coding in _codings(resource.get("code"), "code"):
            key = _code_key(coding)
            if key is None:
                continue
            system, code = key
            for policy, rule in self._codes.get(key, ()):
                if rule.requires_text:
                    conditional.append((policy, rule, path, code))
                else:
                    reason = Reason(ReasonKind.CODE, path, DISPLAY_NAME[system], code, rule.display)
                    reasons.setdefault(policy.id, []).append(reason)
        return conditional

    def _may_match(self, resource: dict[str, object]) -> bool:
        """The quick screen that clears most orders: none of the order's codes is a policy code,
        and the text saying what is ordered holds no policy phrase or acronym.

        One dict look-up per coding, then the primary texts joined by NUL (neither a word character
        nor a phrase separator, so no match can span two texts and each text's ends stay
        boundaries): a few substring tests for the policy words, and the pattern only when one is
        there. Reasons and their paths are worked out only for what passes (``match``), which is
        rare in real order traffic.
        """
        for coding in _as_list(_as_dict(resource.get("code")).get("coding")):
            if isinstance(coding, dict) and _code_key(coding) in self._codes:
                return True
        joined = "\x00".join([text for concept, _ in _primary_concepts(resource) for text in _concept_strings(concept)])
        if joined.isascii():
            # Substring tests (C, memchr-fast) clear most orders before the pattern runs at all.
            lowered = joined.lower()
            for word in self._phrase_words:
                if word in lowered:
                    break
            else:
                for word in self._acronym_words:
                    if word in joined:
                        break
                else:
                    return False
        return self._pattern.search(joined) is not None

    def match(self, resource: object) -> list[OrderMatch]:
        """The policies ``resource`` falls under, one entry per policy, in policy order."""
        if not isinstance(resource, dict) or not self._may_match(resource):
            return []
        return self._match_fully(resource)

    def _match_fully(self, resource: dict[str, object]) -> list[OrderMatch]:
        """Every reason, field by field; ``match`` calls it only for orders the screen let through."""
        reasons: dict[str, list[Reason]] = {}
        conditional = self._code_reasons(resource, reasons)

        primary = list(_primary_texts(resource))
        primary_hits = self._text_hits(iter(primary))
        primary_text = [text for _, text in primary]
        for hit in primary_hits:
            if not hit.is_acronym or self._has_context(hit.policy, primary_text):
                reasons.setdefault(hit.policy.id, []).append(Reason(ReasonKind.TEXT, hit.field, phrase=hit.phrase))

        if conditional:
            # The code itself supplies the clinical context, so an acronym alone qualifies it.
            all_hits = primary_hits + self._text_hits(_supporting_texts(resource))
            for policy, rule, path, code in conditional:
                hit = next((h for h in all_hits if h.policy.id == policy.id), None)
                if hit is not None:
                    system = DISPLAY_NAME[rule.system]
                    reason = Reason(ReasonKind.CODE_WITH_TEXT, path, system, code, rule.display, hit.phrase)
                    reasons.setdefault(policy.id, []).append(reason)

        if not reasons:
            return []
        resource_type = str(resource.get("resourceType") or "ServiceRequest")
        resource_id = _text(resource.get("id"))
        label = order_label(resource)
        return [
            OrderMatch(policy, resource_type, resource_id, label, tuple(dict.fromkeys(reasons[policy.id])))
            for policy in self.policies
            if policy.id in reasons
        ]
