"""Card templates (``cards/*.yaml``) and building CDS Hooks cards from policy matches.

The wording is data an analyst edits; this module loads it once, compiles its Jinja templates,
and proves at start-up that each template renders for each policy that uses it within the limits
CDS Hooks 2.0 sets (summary under 140 characters, every override reason with a display), so a
broken template stops start-up instead of a clinician's order.

Card granularity: one card per policy per hook call, listing every matching order with one
"remove" suggestion each. Several IRE orders in one session are one decision for the clinician;
one card each would only repeat the same warning.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from jinja2 import StrictUndefined, Template, TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from cds_service.cardrules import SUMMARY_LIMIT
from cds_service.matching import OrderMatch, Reason, ReasonKind
from cds_service.policy import PlanNote, Policy, PolicyError, read_yaml_file, validation_problems

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LinkTarget(StrEnum):
    EVIDENCE = "evidence"
    POLICY = "policy"


class CodingSpec(_Strict):
    system: NonEmpty
    code: NonEmpty
    display: NonEmpty


class OverrideReason(_Strict):
    code: NonEmpty
    display: NonEmpty


class LinkSpec(_Strict):
    label: NonEmpty
    target: LinkTarget


class CoverageInformationSpec(_Strict):
    """Wording of the Da Vinci CRD coverage-information systemAction (see cds_service.crd)."""

    reason: NonEmpty
    no_coverage: NonEmpty
    action_description: NonEmpty


class CardSpec(_Strict):
    indicator: Literal["info", "warning", "critical"]
    topic: CodingSpec
    summary: NonEmpty
    source_label: NonEmpty
    detail: NonEmpty
    suggestion_label: NonEmpty
    action_description: NonEmpty
    links: list[LinkSpec] = Field(min_length=1)
    override_reason_system: NonEmpty
    override_reasons: list[OverrideReason] = Field(min_length=1)
    coverage_information: CoverageInformationSpec


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def escape_markdown(text: str) -> str:
    """Make EHR-supplied text inert in GitHub-flavoured Markdown rendered with raw HTML on.

    The reference sandbox renders ``detail`` with raw HTML enabled, so HTML is escaped as well as
    Markdown syntax, and line breaks are folded so text cannot open a new block.
    """
    text = " ".join(text.split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def evidence_link(policy: Policy, base_url: str) -> str:
    return f"{base_url}/evidence/{policy.id}"


def policy_link(policy: Policy, base_url: str) -> str:
    """The policy's own page if it has one, else the policy section of the evidence page."""
    return policy.policy_url or f"{evidence_link(policy, base_url)}#policy"


@dataclass(frozen=True, slots=True)
class OrderView:
    """What a template sees of one matching order."""

    reference: str | None
    label: str
    plain: str
    reasons: tuple[str, ...]


def _reason_texts(reasons: Sequence[Reason]) -> tuple[str, ...]:
    """Codes one by one; text hits folded per phrase, so 'IRE' in three fields reads once.

    Field paths are the engine's own strings (``code.coding[0].display``) and go in code spans;
    codes and phrases come from the EHR and are escaped.
    """
    out: list[str] = []
    fields_by_phrase: dict[str, list[str]] = {}
    for reason in reasons:
        phrase = escape_markdown(reason.phrase or "")
        if reason.kind is ReasonKind.TEXT:
            fields_by_phrase.setdefault(phrase, []).append(f"`{reason.field}`")
            continue
        text = f"{reason.system} {escape_markdown(reason.code or '')} ({reason.display})"
        if reason.kind is ReasonKind.CODE_WITH_TEXT:
            text += f" with the text '{phrase}'"
        out.append(text)
    out.extend(f"the text '{phrase}' in {', '.join(fields)}" for phrase, fields in fields_by_phrase.items())
    return tuple(out)


def order_view(match: OrderMatch) -> OrderView:
    return OrderView(
        reference=match.reference,
        label=escape_markdown(match.label),
        plain=" ".join(match.label.split()),
        reasons=_reason_texts(match.reasons),
    )


@dataclass(frozen=True)
class CompiledCard:
    spec: CardSpec
    summary: Template
    source_label: Template
    detail: Template
    suggestion_label: Template
    action_description: Template
    link_labels: tuple[Template, ...]
    coverage_reason: Template
    coverage_none: Template
    coverage_action: Template


@dataclass(frozen=True, slots=True)
class CoverageWording:
    """The rendered texts of one order's coverage-information systemAction."""

    reason: str
    no_coverage: str
    action_description: str


_ENV = SandboxedEnvironment(undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False)

# The template names that stay the same for every call of a policy. A template that uses no other
# name (orders, guidance, ...) renders the same text every time, so it is rendered once at
# start-up: a sandboxed render costs tens of microseconds, a noticeable share of a hook call
# (bench/RESULTS.md).
_FIXED_NAMES = frozenset({"policy", "payer"})


def _per_call(source: str) -> bool:
    return not meta.find_undeclared_variables(_ENV.parse(source)) <= _FIXED_NAMES


@dataclass(frozen=True, slots=True)
class _PolicyTexts:
    """A policy's card texts rendered at start-up; None where the template names per-call data."""

    source_label: str | None
    link_labels: tuple[str | None, ...]


def _compile(path: Path) -> CompiledCard:
    document = read_yaml_file(path, "card template")
    try:
        spec = CardSpec.model_validate(document.data)
        return CompiledCard(
            spec=spec,
            summary=_ENV.from_string(spec.summary),
            source_label=_ENV.from_string(spec.source_label),
            detail=_ENV.from_string(spec.detail),
            suggestion_label=_ENV.from_string(spec.suggestion_label),
            action_description=_ENV.from_string(spec.action_description),
            link_labels=tuple(_ENV.from_string(link.label) for link in spec.links),
            coverage_reason=_ENV.from_string(spec.coverage_information.reason),
            coverage_none=_ENV.from_string(spec.coverage_information.no_coverage),
            coverage_action=_ENV.from_string(spec.coverage_information.action_description),
        )
    except ValidationError as exc:
        raise PolicyError(problems=validation_problems(path, exc, document)) from exc
    except TemplateError as exc:
        raise PolicyError(f"{path}: template error: {exc}") from exc


class CardBuilder:
    """Renders cards for policy matches. Immutable after start-up; safe to share across requests."""

    def __init__(self, cards_dir: Path, policies: Sequence[Policy], payer: str) -> None:
        self.payer = payer
        self._cards: dict[str, CompiledCard] = {}
        for policy in policies:
            if policy.card not in self._cards:
                path = cards_dir / f"{policy.card}.yaml"
                if not path.is_file():
                    raise PolicyError(f"policies/{policy.id}.yaml: card: no card template {path}")
                self._cards[policy.card] = _compile(path)
        self._fixed: dict[str, _PolicyTexts] = {}
        self._summaries = {p.id: self._check(p) for p in policies}

    def _policy_texts(self, policy: Policy) -> _PolicyTexts:
        card = self._cards[policy.card]
        names = self._names(policy)

        def once(template: Template, source: str) -> str | None:
            return None if _per_call(source) else template.render(names)

        return _PolicyTexts(
            once(card.source_label, card.spec.source_label),
            tuple(once(label, link.label) for label, link in zip(card.link_labels, card.spec.links, strict=True)),
        )

    def _check(self, policy: Policy) -> str:
        """Render every template once with a sample order, so errors surface at start-up."""
        card = self._cards[policy.card]
        where = f"cards/{policy.card}.yaml (for policy {policy.id})"
        sample = OrderMatch(
            policy,
            "ServiceRequest",
            "sample",
            "Sample order",
            (Reason(ReasonKind.TEXT, "code.text", phrase="sample"),),
        )
        try:
            self._fixed[policy.id] = self._policy_texts(policy)
            summary = " ".join(card.summary.render(self._names(policy)).split())
            self.build(policy, [sample], "http://localhost", summary=summary)
            # Both optional branches of the detail: guidance found, and context missing.
            self.build(policy, [sample], "http://localhost", summary=summary, guidance=policy.plan_notes)
            self.build(policy, [sample], "http://localhost", summary=summary, unavailable=("coverage",))
            self.coverage_wording(policy, sample)
        except TemplateError as exc:
            raise PolicyError(f"{where}: template error: {exc}") from exc
        if len(summary) >= SUMMARY_LIMIT:
            raise PolicyError(
                f"{where}: summary: renders to {len(summary)} characters; CDS Hooks allows under "
                f"{SUMMARY_LIMIT}: {summary!r}"
            )
        return summary

    def _names(self, policy: Policy, **more: Any) -> dict[str, Any]:
        return {"policy": policy, "payer": self.payer, **more}

    def coverage_wording(self, policy: Policy, match: OrderMatch) -> CoverageWording:
        card = self._cards[policy.card]
        names = self._names(policy, order=order_view(match))
        return CoverageWording(
            reason=" ".join(card.coverage_reason.render(names).split()),
            no_coverage=" ".join(card.coverage_none.render(names).split()),
            action_description=" ".join(card.coverage_action.render(names).split()),
        )

    def build(
        self,
        policy: Policy,
        matches: Sequence[OrderMatch],
        base_url: str,
        *,
        summary: str | None = None,
        guidance: Sequence[PlanNote] = (),
        unavailable: Sequence[str] = (),
    ) -> dict[str, Any]:
        """One card for ``policy`` covering ``matches``; every card gets a fresh uuid.

        ``guidance`` are the policy's plan notes that apply to this patient; ``unavailable`` names
        the patient context that could not be had (cds_service.context.ContextKey values).
        """
        card = self._cards[policy.card]
        spec = card.spec
        fixed = self._fixed[policy.id]
        orders = [order_view(m) for m in matches]
        names = self._names(policy, orders=orders, guidance=guidance, unavailable=unavailable)
        evidence_url = evidence_link(policy, base_url)
        policy_url = policy_link(policy, base_url)
        targets: Mapping[LinkTarget, str] = {LinkTarget.EVIDENCE: evidence_url, LinkTarget.POLICY: policy_url}

        suggestions = []
        for order in orders:
            if order.reference is None:
                continue  # nothing to name in a delete action
            order_names = self._names(policy, order=order)
            suggestions.append(
                {
                    "label": card.suggestion_label.render(order_names),
                    "uuid": str(uuid.uuid4()),
                    "isRecommended": True,
                    "actions": [
                        {
                            "type": "delete",
                            "description": card.action_description.render(order_names),
                            "resourceId": order.reference,
                        }
                    ],
                }
            )

        result: dict[str, Any] = {
            "uuid": str(uuid.uuid4()),
            "summary": summary or self._summaries[policy.id],
            "indicator": spec.indicator,
            "detail": card.detail.render(names).strip(),
            "source": {
                "label": card.source_label.render(names) if fixed.source_label is None else fixed.source_label,
                "url": policy_url,
                "topic": spec.topic.model_dump(),
            },
            "links": [
                {
                    "label": label.render(names) if text is None else text,
                    "url": targets[link.target],
                    "type": "absolute",
                }
                for label, text, link in zip(card.link_labels, fixed.link_labels, spec.links, strict=True)
            ],
            "overrideReasons": [
                {"system": spec.override_reason_system, "code": r.code, "display": r.display}
                for r in spec.override_reasons
            ],
        }
        if suggestions:
            # CDS Hooks 2.0 Card.selectionBehavior: "If suggestions are present, selectionBehavior
            # MUST also be provided". Each suggestion removes a different order, so any subset.
            result["suggestions"] = suggestions
            result["selectionBehavior"] = "any"
        return result
