"""The hook pipeline, free of Flask so the CLI, tests and benchmarks share it.

validate envelope (hookrequest) -> extract the ServiceRequests -> select what the service's hook
asks for -> match policies -> FHIR-validate the matched ones (log only, once per distinct resource:
fhircheck) -> merge per policy -> read the patient context (only when something matched) -> build cards, plan
guidance and CRD coverage information.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cds_service.cards import CardBuilder, policy_link
from cds_service.config import Settings
from cds_service.context import UNAVAILABLE_EXTENSION, Fetcher, PatientContext, read_context
from cds_service.crd import CrdOptions, coverage_action, place_system_actions
from cds_service.fhircheck import DEFAULT_CACHE_SIZE, FhirChecker, FhirValidation
from cds_service.hookrequest import HookRequest
from cds_service.matching import Matcher, OrderMatch
from cds_service.plans import applicable_notes
from cds_service.policy import Policy, load_policies
from cds_service.services import OrderScope, ServiceDefinition

log = logging.getLogger(__name__)

EXAMINED_TYPES = frozenset({"ServiceRequest"})

# Given the matches of one call, the ones to show. The HTTP layer passes one that drops what
# order-select already showed (cds_service.audit); the engine itself knows nothing of storage.
MatchFilter = Callable[[ServiceDefinition, HookRequest, Sequence[OrderMatch]], Sequence[OrderMatch]]


@dataclass(frozen=True, slots=True)
class IssuedCard:
    """One card of the response, with the policy and the order matches it was built from."""

    policy: Policy
    card: dict[str, Any]
    matches: tuple[OrderMatch, ...]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A finished hook call: the response body and what led to it (for logs and the audit trail)."""

    response: dict[str, Any]
    matches: tuple[OrderMatch, ...]
    examined: int
    issued: tuple[IssuedCard, ...] = ()
    # Matches a MatchFilter held back (already shown for the same decision): no card and no
    # systemAction for them (CRD forbids repeating an unchanged systemAction).
    suppressed: tuple[OrderMatch, ...] = ()


def _reference_key(reference: str) -> str:
    """``ServiceRequest/1``, also from an absolute or versioned reference."""
    parts = reference.strip().split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:])


def _draft_resources(request: HookRequest) -> Iterator[dict[str, Any]]:
    for entry in request.context.draftOrders.entry:
        if entry.resource is not None:
            yield entry.resource


def select_orders(service: ServiceDefinition, request: HookRequest) -> list[dict[str, Any]]:
    """The resources the service evaluates, by the service's own hook, not the request's."""
    # resourceType is client JSON: a list or object there must not reach a set look-up (TypeError).
    examined = [r for r in _draft_resources(request) if str(r.get("resourceType")) in EXAMINED_TYPES]
    if service.scope is OrderScope.ALL_DRAFT_ORDERS:
        return examined
    wanted = {_reference_key(s) for s in request.require_selections()}
    chosen = [r for r in examined if f"{r.get('resourceType')}/{r.get('id')}" in wanted]
    if len(chosen) < len(wanted):
        present = {f"{r.get('resourceType')}/{r.get('id')}" for r in _draft_resources(request)}
        missing = sorted(wanted - present)
        if missing:
            log.info(
                "hookInstance=%s: %d selection(s) not found in draftOrders: %s",
                request.hookInstance,
                len(missing),
                ", ".join(missing),
            )
    return chosen


class Engine:
    """Policies, matcher and card templates, loaded and checked once at start-up."""

    def __init__(
        self,
        policies: Sequence[Policy],
        cards_dir: Path,
        payer: str,
        crd: CrdOptions | None = None,
        *,
        fhir_cache_size: int = DEFAULT_CACHE_SIZE,
        fhir_validation: FhirValidation = FhirValidation.MATCHED,
    ) -> None:
        self.policies = tuple(policies)
        self.matcher = Matcher(self.policies)
        self.cards = CardBuilder(cards_dir, self.policies, payer)
        self.crd = crd or CrdOptions()
        self.fhir = FhirChecker(fhir_cache_size)
        self.validate_all = fhir_validation is FhirValidation.ALL

    @classmethod
    def from_settings(cls, settings: Settings) -> Engine:
        """The engine ``serve`` and the offline commands share: policies, cards and options from
        ``settings``. A broken policy or card file raises ``PolicyError``."""
        return cls(
            load_policies(settings.policies_dir),
            settings.cards_dir,
            settings.payer_name,
            CrdOptions(settings.crd_coverage_info, settings.crd_system_actions),
            fhir_cache_size=settings.fhir_cache_size,
            fhir_validation=settings.fhir_validation,
        )

    def evaluate(
        self,
        service: ServiceDefinition,
        request: HookRequest,
        base_url: str | Callable[[], str],
        fetcher: Fetcher | None = None,
        match_filter: MatchFilter | None = None,
    ) -> Evaluation:
        """Answer one hook call. Without ``fetcher`` the patient context comes from prefetch only
        (no network), which is what the CLI and benchmarks want; without ``match_filter`` every
        match is shown. ``base_url`` (for card links) may be a callable, called only when there is
        a card: working out a request's own URL costs more than the rest of an empty answer."""
        if request.hook != service.hook:
            # The reference sandbox stamps the current screen's hook on every call, so an
            # order-sign service may hear "order-select". The service's own hook decides. The
            # request's log line names both (cds_service.telemetry), so this detail is DEBUG.
            log.debug(
                "hookInstance=%s: request says hook %r, service %s answers as %s",
                request.hookInstance,
                request.hook,
                service.id,
                service.hook.value,
            )
        orders = select_orders(service, request)
        found: list[OrderMatch] = []
        resources: dict[str, dict[str, Any]] = {}
        for order in orders:
            order_matches = self.matcher.match(order)
            if order_matches or self.validate_all:
                self.fhir.check(order, request.hookInstance)
            for match in order_matches:
                found.append(match)
                if match.reference:
                    resources[match.reference] = order
        if not found:  # the common answer: no card, nothing to read or build
            return Evaluation({"cards": []}, (), len(orders))
        shown = list(match_filter(service, request, found)) if match_filter else found
        matches: dict[str, list[OrderMatch]] = {}
        for match in shown:
            matches.setdefault(match.policy.id, []).append(match)
        today = dt.datetime.now(dt.UTC).date()
        # Patient and coverage are optional enrichment, read only when there is a card to enrich.
        context = read_context(service.prefetch, request, fetcher, today) if matches else PatientContext()
        url = (base_url() if callable(base_url) else base_url) if matches else ""
        response, issued = self._respond(matches, resources, context, url, today)
        kept = {id(m) for m in shown}
        suppressed = tuple(m for m in found if id(m) not in kept)
        return Evaluation(response, tuple(found), len(orders), issued, suppressed)

    def _respond(
        self,
        matches: Mapping[str, list[OrderMatch]],
        resources: Mapping[str, dict[str, Any]],
        context: PatientContext,
        base_url: str,
        today: dt.date,
    ) -> tuple[dict[str, Any], tuple[IssuedCard, ...]]:
        unavailable = [key.value for key in context.unavailable]
        issued: list[IssuedCard] = []
        actions: dict[str, dict[str, Any]] = {}  # one per order, from the first policy it falls under
        for policy in self.policies:
            if policy.id not in matches:
                continue
            guidance = applicable_notes(policy.plan_notes, context, today)
            card = self.cards.build(policy, matches[policy.id], base_url, guidance=guidance, unavailable=unavailable)
            issued.append(IssuedCard(policy, card, tuple(matches[policy.id])))
            if not self.crd.coverage_info:
                continue
            for match in matches[policy.id]:
                if match.reference and match.reference not in actions:
                    wording = self.cards.coverage_wording(policy, match)
                    order = resources[match.reference]
                    actions[match.reference] = coverage_action(
                        order, context, wording, policy_link(policy, base_url), today
                    )
        response: dict[str, Any] = {"cards": [i.card for i in issued]}
        place_system_actions(response, list(actions.values()), self.crd.placement)
        if context.unavailable:
            response.setdefault("extension", {})[UNAVAILABLE_EXTENSION] = {
                key.value: reason.value for key, reason in context.unavailable.items()
            }
        return response, tuple(issued)
