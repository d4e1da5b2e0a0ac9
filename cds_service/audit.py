"""The audit trail: the cards each hook call issued, what clinicians did with them (feedback),
and "one alert per decision". This is the layer between the HTTP endpoints and the store; the
engine stays free of both.

- A hook call that issued a card becomes one batch (hook call, cards, orders and suggestions,
  decisions shown) handed to the background writer: the clinician never waits for the database,
  and an unreachable database sends the batch to the local spool instead of failing the call.
- Feedback (CDS Hooks 2.0 "Feedback") is written at once, exactly once per card, outcome and
  outcomeTimestamp, since the spec lets a client send the same feedback several times. When the
  card is known, the override reason must be one the card offered and accepted suggestions must be
  the card's own; feedback for a card this service did not issue is kept with ``card_known`` false.
- "One alert per decision": order-select remembers each order it warned about, keyed by an HMAC
  of patient, order, policy version and the reasons it matched; order-sign does not warn again
  about an unchanged order (``CDS_REPEAT_ON_SIGN`` turns this off). A changed order, a new policy
  version or a new reason is a new decision and is shown.

Patient and user ids are stored only as keyed hashes (``cds_service.idhash``); nothing from the
order's free text is stored, only codes and the policy phrases that matched.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import SQLAlchemyError

from cds_service.config import Settings
from cds_service.engine import Evaluation
from cds_service.errors import BadRequest
from cds_service.feedback import FeedbackItem
from cds_service.hookrequest import Hook, HookRequest
from cds_service.idhash import IdHasher, IdKind
from cds_service.matching import OrderMatch, Reason
from cds_service.services import ServiceDefinition
from cds_service.storage import Store
from cds_service.storage.spool import Batch
from cds_service.storage.tables import card_orders, cards, shown_decisions

log = logging.getLogger(__name__)

# Feedback id namespace: uuid5(namespace, card, outcome, timestamp) names one piece of feedback.
_FEEDBACK_NAMESPACE = uuid.UUID("6f1de3f4-5a0b-4d8e-9c31-2f7a8b0c5e19")
# How long feedback for a card not yet in the database waits for this process's queued writes.
_FLUSH_SECONDS = 2.0
# order-sign waits at most this long (PostgreSQL) for the look-up of earlier cards.
_LOOKUP_TIMEOUT_MS = 1000
_TEXT_LIMIT = 255
# "Already shown?" as two statements built once (SQLAlchemy caches their compiled form): equality
# for the usual single matched order, an expanding IN for several.
_SHOWN_ONE = select(shown_decisions.c.decision_key).where(shown_decisions.c.decision_key == bindparam("key"))
_SHOWN_MANY = select(shown_decisions.c.decision_key).where(
    shown_decisions.c.decision_key.in_(bindparam("keys", expanding=True))
)


def clean(value: str | None, limit: int = _TEXT_LIMIT) -> str | None:
    """Client text made storable everywhere: no NUL (PostgreSQL refuses it), no lone surrogates."""
    if value is None:
        return None
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")[:limit]


def fhir_origin(url: str | None) -> str | None:
    """``scheme://host[:port]`` of the FHIR server: which EHR, without a path that may name a tenant."""
    try:
        parts = urlsplit((url or "").strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not parts.scheme or not host:
        return None
    host = f"[{host}]" if ":" in host else host
    return clean(f"{parts.scheme.lower()}://{host}" + (f":{port}" if port else ""))


def _reason_json(reason: Reason) -> dict[str, str]:
    values = {
        "kind": reason.kind.value,
        "system": reason.system,
        "code": reason.code,
        "phrase": clean(reason.phrase),
        "field": reason.field,
    }
    return {k: v for k, v in values.items() if v is not None}


def _reasons_fingerprint(match: OrderMatch) -> str:
    """The matched reasons, independent of where in the order they were found."""
    found = {f"{r.kind.value}|{r.system or ''}|{r.code or ''}|{(r.phrase or '').lower()}" for r in match.reasons}
    return "\n".join(sorted(found))


def _suggestion_uuids(card: dict[str, Any]) -> dict[str, list[str]]:
    """The card's suggestion uuids by the order reference their delete action names."""
    by_order: dict[str, list[str]] = {}
    for suggestion in card.get("suggestions", []):
        for action in suggestion.get("actions", []):
            by_order.setdefault(action["resourceId"], []).append(suggestion["uuid"])
    return by_order


@dataclass(frozen=True, slots=True)
class _IssuedCard:
    """What feedback about one issued card may name: its override reasons and suggestions."""

    reasons: set[tuple[str, str]]
    suggestions: set[str]

    def check(self, item: FeedbackItem, path: str) -> None:
        reason = item.overrideReason.reason if item.overrideReason else None
        if reason is not None and (reason.system, reason.code) not in self.reasons:
            offered = ", ".join(sorted(code for _, code in self.reasons))
            raise BadRequest(
                f"{path}.overrideReason.reason: '{reason.code}' ({reason.system}) is not one of the card's "
                f"overrideReasons ({offered})",
                field=f"{path}.overrideReason.reason",
            )
        for index, suggestion in enumerate(item.acceptedSuggestions or []):
            if suggestion.id not in self.suggestions:
                raise BadRequest(
                    f"{path}.acceptedSuggestions[{index}].id: the card has no suggestion '{suggestion.id}'",
                    field=f"{path}.acceptedSuggestions[{index}].id",
                )


class AuditTrail:
    """Records hook calls and feedback, and answers "was this decision shown already?"."""

    def __init__(self, store: Store, hasher: IdHasher, *, repeat_on_sign: bool) -> None:
        self.store = store
        self.hasher = hasher
        self.repeat_on_sign = repeat_on_sign

    @classmethod
    def open(cls, settings: Settings) -> AuditTrail:
        return cls(Store.open(settings), IdHasher.from_settings(settings), repeat_on_sign=settings.repeat_on_sign)

    def decision_key(self, request: HookRequest, match: OrderMatch) -> str | None:
        """The identity of the clinician's decision about one order, or None without an order id."""
        if match.reference is None:
            return None
        return self.hasher.digest(
            IdKind.DECISION,
            request.context.patientId,
            match.reference,
            match.policy.id,
            match.policy.version,
            _reasons_fingerprint(match),
        )

    def unseen(
        self, service: ServiceDefinition, request: HookRequest, matches: Sequence[OrderMatch]
    ) -> Sequence[OrderMatch]:
        """The engine's MatchFilter: at order-sign, drop the orders order-select already warned about.

        One indexed primary-key look-up, only when something matched. If the database cannot
        answer, every card is shown: a repeated warning is better than a missing one.
        """
        if service.hook is not Hook.ORDER_SIGN or self.repeat_on_sign:
            return matches
        keys = {id(m): key for m in matches if (key := self.decision_key(request, m)) is not None}
        if not keys:
            return matches
        try:
            with self.store.connect() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(text(f"SET LOCAL statement_timeout = {_LOOKUP_TIMEOUT_MS}"))
                wanted = set(keys.values())
                if len(wanted) == 1:
                    shown = set(connection.scalars(_SHOWN_ONE, {"key": wanted.pop()}))
                else:
                    shown = set(connection.scalars(_SHOWN_MANY, {"keys": sorted(wanted)}))
        except SQLAlchemyError as exc:
            log.warning(
                "hookInstance=%s: earlier cards unknown (%s); showing every card",
                request.hookInstance,
                type(exc).__name__,
            )
            return matches
        return [m for m in matches if keys.get(id(m)) not in shown]

    def record_hook_call(
        self, service: ServiceDefinition, request: HookRequest, evaluation: Evaluation, client: str | None
    ) -> None:
        """Queue the audit record of a call that issued cards. Never raises: the card comes first."""
        if not evaluation.issued:
            return
        try:
            self.store.submit(self._hook_call_batch(service, request, evaluation, client))
        except Exception:
            log.exception("hookInstance=%s: audit record not queued", request.hookInstance)

    def _hook_call_batch(
        self, service: ServiceDefinition, request: HookRequest, evaluation: Evaluation, client: str | None
    ) -> Batch:
        now = dt.datetime.now(dt.UTC)
        call_id = str(uuid.uuid4())
        batch: Batch = {
            "hook_calls": [
                {
                    "id": call_id,
                    "called_at": now,
                    "service_id": service.id,
                    "hook": service.hook.value,
                    "hook_instance": clean(request.hookInstance),
                    "client": clean(client),
                    "fhir_origin": fhir_origin(request.fhirServer),
                    "patient_hash": self.hasher.digest(IdKind.PATIENT, request.context.patientId),
                    "user_hash": self.hasher.digest(IdKind.USER, request.context.userId),
                }
            ],
            "cards": [],
            "card_orders": [],
            "shown_decisions": [],
        }
        for issued in evaluation.issued:
            card = issued.card
            batch["cards"].append(
                {
                    "uuid": card["uuid"],
                    "hook_call_id": call_id,
                    "service_id": service.id,
                    "policy_id": issued.policy.id,
                    "policy_version": issued.policy.version,
                    "issued_at": now,
                    "override_reasons": [
                        {"system": r["system"], "code": r["code"]} for r in card.get("overrideReasons", [])
                    ],
                }
            )
            suggestions = _suggestion_uuids(card)
            for position, match in enumerate(issued.matches):
                waiting = suggestions.get(match.reference or "", [])
                batch["card_orders"].append(
                    {
                        "card_uuid": card["uuid"],
                        "position": position,
                        "order_ref": clean(match.reference),
                        "suggestion_uuid": waiting.pop(0) if waiting else None,
                        "reasons": [_reason_json(r) for r in match.reasons],
                    }
                )
                if service.hook is Hook.ORDER_SELECT and (key := self.decision_key(request, match)) is not None:
                    batch["shown_decisions"].append({"decision_key": key, "shown_at": now, "card_uuid": card["uuid"]})
        return batch

    def _issued_cards(self, service: ServiceDefinition, card_ids: set[str]) -> dict[str, _IssuedCard] | None:
        """The cards among ``card_ids`` this service issued; None when the database is unreachable."""
        try:
            with self.store.connect() as connection:
                rows = connection.execute(
                    select(cards.c.uuid, cards.c.override_reasons).where(
                        cards.c.uuid.in_(card_ids), cards.c.service_id == service.id
                    )
                ).all()
                found = {
                    uuid_: _IssuedCard({(r["system"], r["code"]) for r in reasons}, set()) for uuid_, reasons in rows
                }
                if found:
                    query = select(card_orders.c.card_uuid, card_orders.c.suggestion_uuid).where(
                        card_orders.c.card_uuid.in_(found.keys()), card_orders.c.suggestion_uuid.is_not(None)
                    )
                    for card_uuid, suggestion in connection.execute(query):
                        found[card_uuid].suggestions.add(suggestion)
        except SQLAlchemyError as exc:
            log.warning("feedback: cards cannot be checked now (%s); kept unchecked", type(exc).__name__)
            return None
        return found

    def record_feedback(self, service: ServiceDefinition, items: Sequence[FeedbackItem], client: str | None) -> int:
        """Validate against the issued cards and write each item exactly once; the count received.

        Raises BadRequest (400) naming the field for a reason or suggestion the card did not offer.
        When the database is unreachable the feedback goes to the spool, checked only in shape.
        """
        card_ids = {clean(item.card) or "" for item in items}
        issued = self._issued_cards(service, card_ids)
        if issued is not None and len(issued) < len(card_ids):
            # A card issued moments ago may still be on this process's write queue.
            self.store.flush(_FLUSH_SECONDS)
            issued = self._issued_cards(service, card_ids)
        for index, item in enumerate(items):
            card = issued.get(clean(item.card) or "") if issued else None
            if card is not None:
                card.check(item, f"feedback[{index}]")
        self.store.save(self._feedback_batch(service, items, issued, client))
        return len(items)

    def _feedback_batch(
        self,
        service: ServiceDefinition,
        items: Sequence[FeedbackItem],
        issued: dict[str, _IssuedCard] | None,
        client: str | None,
    ) -> Batch:
        received = dt.datetime.now(dt.UTC)
        batch: Batch = {"feedback": [], "feedback_suggestions": []}
        for item in items:
            card = clean(item.card) or ""
            at = item.timestamp_utc
            feedback_id = str(uuid.uuid5(_FEEDBACK_NAMESPACE, f"{card}\n{item.outcome.value}\n{at.isoformat()}"))
            reason = item.overrideReason.reason if item.overrideReason else None
            batch["feedback"].append(
                {
                    "id": feedback_id,
                    "service_id": service.id,
                    "card_uuid": card,
                    "outcome": item.outcome.value,
                    "outcome_at": at,
                    "received_at": received,
                    # None: not checked (database unreachable); decided when the spool is written.
                    "card_known": None if issued is None else card in issued,
                    "reason_system": clean(reason.system) if reason else None,
                    "reason_code": clean(reason.code) if reason else None,
                    "has_comment": bool(item.overrideReason and item.overrideReason.userComment),
                    "client": clean(client),
                }
            )
            accepted = dict.fromkeys(clean(s.id) for s in item.acceptedSuggestions or [])
            batch["feedback_suggestions"].extend({"feedback_id": feedback_id, "suggestion_uuid": s} for s in accepted)
        return batch
