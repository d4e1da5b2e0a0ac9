"""``cds-service report``: what the cards did, per policy and service, over a period.

For the cards issued in the period (``since`` inclusive, ``until`` exclusive, UTC):

- cards issued, and distinct patients (counted by keyed hash; no id is ever stored);
- accepted and overridden: cards with at least one feedback of that outcome;
- overridden by reason: cards per override reason code (``(none)`` when no reason was given);
- override rate: overridden / (accepted + overridden). A card the clinician ignores sends no
  feedback (CDS Hooks 2.0 "Feedback"), so cards without feedback have no known outcome and are
  left out of the rate;
- orders removed: distinct accepted "remove the order" suggestions of those cards.

Feedback naming a card this service did not issue is counted apart.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, distinct, exists, func, select

from cds_service.config import Settings
from cds_service.storage import Store
from cds_service.storage.tables import FeedbackOutcome, card_orders, cards, feedback, feedback_suggestions, hook_calls

NO_REASON = "(none)"


class ReportFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


@dataclass(slots=True)
class Figures:
    """The figures of one policy and service."""

    policy: str
    service: str
    cards_issued: int = 0
    distinct_patients: int = 0
    accepted: int = 0
    overridden: int = 0
    overridden_by_reason: dict[str, int] = field(default_factory=dict)
    orders_removed: int = 0

    @property
    def override_rate(self) -> float | None:
        decided = self.accepted + self.overridden
        return self.overridden / decided if decided else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "service": self.service,
            "cards_issued": self.cards_issued,
            "distinct_patients": self.distinct_patients,
            "accepted": self.accepted,
            "overridden": self.overridden,
            "overridden_by_reason": dict(sorted(self.overridden_by_reason.items())),
            "override_rate": None if self.override_rate is None else round(self.override_rate, 4),
            "orders_removed": self.orders_removed,
        }


@dataclass(frozen=True, slots=True)
class Report:
    since: dt.datetime | None
    until: dt.datetime | None
    rows: tuple[Figures, ...]
    feedback_for_unknown_cards: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "rows": [row.as_dict() for row in self.rows],
            "feedback_for_unknown_cards": self.feedback_for_unknown_cards,
        }


def _period(column: Any, since: dt.datetime | None, until: dt.datetime | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(column >= since)
    if until is not None:
        conditions.append(column < until)
    return conditions


# Feedback about a card, sent to the service that issued it.
_CARD_FEEDBACK = and_(feedback.c.card_uuid == cards.c.uuid, feedback.c.service_id == cards.c.service_id)
_GROUP = (cards.c.policy_id, cards.c.service_id)


def build_report(connection: Connection, since: dt.datetime | None, until: dt.datetime | None) -> Report:
    in_period = _period(cards.c.issued_at, since, until)
    figures: dict[tuple[str, str], Figures] = {}

    def row(policy: str, service: str) -> Figures:
        return figures.setdefault((policy, service), Figures(policy, service))

    issued = (
        select(*_GROUP, func.count(cards.c.uuid), func.count(distinct(hook_calls.c.patient_hash)))
        .select_from(cards.join(hook_calls, cards.c.hook_call_id == hook_calls.c.id))
        .where(*in_period)
        .group_by(*_GROUP)
    )
    for policy, service, count, patients in connection.execute(issued):
        row(policy, service).cards_issued = count
        row(policy, service).distinct_patients = patients

    with_feedback = cards.join(feedback, _CARD_FEEDBACK)
    outcomes = (
        select(*_GROUP, feedback.c.outcome, func.count(distinct(cards.c.uuid)))
        .select_from(with_feedback)
        .where(*in_period)
        .group_by(*_GROUP, feedback.c.outcome)
    )
    for policy, service, outcome, count in connection.execute(outcomes):
        if outcome is FeedbackOutcome.ACCEPTED:
            row(policy, service).accepted = count
        else:
            row(policy, service).overridden = count

    reasons = (
        select(*_GROUP, feedback.c.reason_code, func.count(distinct(cards.c.uuid)))
        .select_from(with_feedback)
        .where(*in_period, feedback.c.outcome == FeedbackOutcome.OVERRIDDEN)
        .group_by(*_GROUP, feedback.c.reason_code)
    )
    for policy, service, code, count in connection.execute(reasons):
        row(policy, service).overridden_by_reason[code or NO_REASON] = count

    removed = (
        select(*_GROUP, func.count(distinct(card_orders.c.suggestion_uuid)))
        .select_from(
            with_feedback.join(feedback_suggestions, feedback_suggestions.c.feedback_id == feedback.c.id).join(
                card_orders,
                and_(
                    card_orders.c.card_uuid == cards.c.uuid,
                    card_orders.c.suggestion_uuid == feedback_suggestions.c.suggestion_uuid,
                ),
            )
        )
        .where(*in_period, feedback.c.outcome == FeedbackOutcome.ACCEPTED)
        .group_by(*_GROUP)
    )
    for policy, service, count in connection.execute(removed):
        row(policy, service).orders_removed = count

    # Decided by the cards present now, not by card_known: a card whose record reached the database
    # after its feedback (both spooled during an outage) is this service's card after all.
    unknown = connection.scalar(
        select(func.count())
        .select_from(feedback)
        .where(~exists().where(_CARD_FEEDBACK), *_period(feedback.c.outcome_at, since, until))
    )
    return Report(since, until, tuple(figures[key] for key in sorted(figures)), int(unknown or 0))


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


@dataclass(frozen=True, slots=True)
class _Column:
    key: str  # CSV header
    label: str  # table header
    table: Callable[[Figures], object]
    csv: Callable[[Figures], object]


def _column(key: str, label: str, value: Callable[[Figures], object]) -> _Column:
    return _Column(key, label, value, value)


_COLUMNS = (
    _column("policy", "policy", lambda r: r.policy),
    _column("service", "service", lambda r: r.service),
    _column("cards_issued", "cards", lambda r: r.cards_issued),
    _column("distinct_patients", "patients", lambda r: r.distinct_patients),
    _column("accepted", "accepted", lambda r: r.accepted),
    _column("overridden", "overridden", lambda r: r.overridden),
    _Column(
        "override_rate",
        "override rate",
        lambda r: _rate(r.override_rate),
        lambda r: "" if r.override_rate is None else f"{r.override_rate:.4f}",
    ),
    _column("orders_removed", "orders removed", lambda r: r.orders_removed),
)
_TEXT_COLUMNS = 2  # policy and service are left-aligned; the figures right-aligned


def _aligned(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    cells = [list(header), *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for r in cells:
        pairs = enumerate(zip(r, widths, strict=True))
        padded = [c.ljust(w) if i < _TEXT_COLUMNS else c.rjust(w) for i, (c, w) in pairs]
        lines.append("  ".join(padded).rstrip())
    return lines


def render_table(report: Report) -> str:
    since = report.since.isoformat() if report.since else "the beginning"
    until = report.until.isoformat() if report.until else "now"
    lines = [f"Cards issued from {since} until {until}", ""]
    if not report.rows:
        lines.append("No cards were issued in this period.")
    else:
        lines += _aligned([c.label for c in _COLUMNS], ([c.table(r) for c in _COLUMNS] for r in report.rows))
        reasons = [
            (r.policy, r.service, reason, count)
            for r in report.rows
            for reason, count in sorted(r.overridden_by_reason.items())
        ]
        if reasons:
            lines += ["", "Overridden by reason", *_aligned(("policy", "service", "reason", "cards"), reasons)]
    lines += ["", f"Feedback for cards this service did not issue: {report.feedback_for_unknown_cards}"]
    return "\n".join(lines) + "\n"


def render_csv(report: Report) -> str:
    """One row per policy and service; one ``overridden:<reason>`` column per reason seen."""
    reasons = sorted({reason for r in report.rows for reason in r.overridden_by_reason})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*(c.key for c in _COLUMNS), *(f"overridden:{reason}" for reason in reasons)])
    for r in report.rows:
        writer.writerow([*(c.csv(r) for c in _COLUMNS), *(r.overridden_by_reason.get(reason, 0) for reason in reasons)])
    return out.getvalue()


def render(report: Report, form: ReportFormat) -> str:
    if form is ReportFormat.JSON:
        return json.dumps(report.as_dict(), indent=2) + "\n"
    if form is ReportFormat.CSV:
        return render_csv(report)
    return render_table(report)


def parse_bound(value: str, *, end: bool = False) -> dt.datetime:
    """``2026-01-31`` or an ISO 8601 date-time (UTC when no offset is given).

    A plain date as the end of the period includes that whole day.
    """
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{value}' is not a date (2026-01-31) or ISO 8601 date-time") from None
        return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start + dt.timedelta(days=1) if end else start


def _report(args: argparse.Namespace) -> int:
    store = Store.open(Settings.from_env())
    with store.connect() as connection:
        report = build_report(connection, args.since, args.until)
    sys.stdout.write(render(report, args.format))
    return 0


def add_report_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    report = commands.add_parser(
        "report",
        help="what the cards did: issued, accepted, overridden, orders removed",
        description="Per policy and service, for cards issued in the period: cards issued, distinct "
        "patients, accepted, overridden (by reason), override rate and orders removed.",
    )
    report.add_argument("--since", type=parse_bound, help="first day (2026-01-01) or date-time, UTC; default: all")
    report.add_argument(
        "--until", type=lambda v: parse_bound(v, end=True), help="last day, included, or date-time (excluded), UTC"
    )
    report.add_argument(
        "--format", type=ReportFormat, choices=list(ReportFormat), default=ReportFormat.TABLE, help="default: table"
    )
    report.set_defaults(handler=_report)
