"""The database tables, declared once with SQLAlchemy Core.

Alembic migrations (``migrations/versions``) create them; a test proves the migrations and these
declarations agree. Every table has a key the service chooses itself (a card's uuid, a hook call's
uuid, a hash of a feedback's identity), so a write can be repeated, from the audit spool or from a
second instance, and still leave exactly one row.

Patient and user ids never appear here: only their keyed hashes (``cds_service.idhash``).
A new feature adds its tables here and a migration beside the existing ones.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC instant on every backend.

    SQLite has no time zone type and drops tzinfo, so values are stored as naive UTC and come back
    aware; PostgreSQL stores ``timestamptz``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UtcDateTime needs an aware datetime")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class FeedbackOutcome(StrEnum):
    """CDS Hooks 2.0 Feedback.outcome."""

    ACCEPTED = "accepted"
    OVERRIDDEN = "overridden"


# Stable constraint names, so later migrations can refer to them on both backends.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

SERVICE_ID = 100  # length of service and policy ids
UUID = 36
HASH = 64  # hex SHA-256
FEEDBACK_ID = 128  # card and suggestion ids as a client sends them back (checked in feedback.py)

# One row per hook call that issued at least one card.
hook_calls = Table(
    "hook_calls",
    metadata,
    Column("id", String(UUID), primary_key=True),
    Column("called_at", UtcDateTime(), nullable=False, index=True),
    Column("service_id", String(SERVICE_ID), nullable=False),
    Column("hook", String(SERVICE_ID), nullable=False),
    Column("hook_instance", Text, nullable=False),
    # The calling CDS client (the JWT ``iss``) when the call was authenticated.
    Column("client", Text),
    # scheme://host[:port] of fhirServer: which EHR, without paths that may name a tenant.
    Column("fhir_origin", Text),
    Column("patient_hash", String(HASH), nullable=False),
    Column("user_hash", String(HASH), nullable=False),
)

cards = Table(
    "cards",
    metadata,
    Column("uuid", String(UUID), primary_key=True),
    Column("hook_call_id", ForeignKey("hook_calls.id"), nullable=False, index=True),
    Column("service_id", String(SERVICE_ID), nullable=False),
    Column("policy_id", String(SERVICE_ID), nullable=False),
    Column("policy_version", String(SERVICE_ID), nullable=False),
    Column("issued_at", UtcDateTime(), nullable=False),
    # [{"system", "code"}]: what feedback may name as overrideReason for this card.
    Column("override_reasons", JSON, nullable=False),
    Index(None, "policy_id", "issued_at"),
)

# The orders a card named, why each matched, and the uuid of the suggestion that removes it.
card_orders = Table(
    "card_orders",
    metadata,
    Column("card_uuid", ForeignKey("cards.uuid"), primary_key=True),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("order_ref", Text),
    Column("suggestion_uuid", String(UUID), unique=True),
    # [{"kind", "system", "code", "phrase", "field"}]: codes and policy phrases, no order text.
    Column("reasons", JSON, nullable=False),
)

feedback = Table(
    "feedback",
    metadata,
    # uuid5 of (card, outcome, outcomeTimestamp): the same feedback sent again is the same row.
    Column("id", String(UUID), primary_key=True),
    Column("service_id", String(SERVICE_ID), nullable=False),
    Column("card_uuid", String(FEEDBACK_ID), nullable=False, index=True),
    Column(
        "outcome",
        Enum(
            FeedbackOutcome,
            native_enum=False,
            create_constraint=True,
            name="outcome",
            length=16,
            values_callable=lambda members: [m.value for m in members],
        ),
        nullable=False,
    ),
    Column("outcome_at", UtcDateTime(), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    # Whether this service issued the card (checked when the feedback was written).
    Column("card_known", Boolean, nullable=False),
    Column("reason_system", Text),
    Column("reason_code", String(FEEDBACK_ID)),
    # userComment is free text that may name the patient, so only its presence is kept.
    Column("has_comment", Boolean, nullable=False),
    Column("client", Text),
)

feedback_suggestions = Table(
    "feedback_suggestions",
    metadata,
    Column("feedback_id", ForeignKey("feedback.id"), primary_key=True),
    Column("suggestion_uuid", String(FEEDBACK_ID), primary_key=True, index=True),
)

# "One alert per decision": what order-select showed, keyed by an HMAC of patient, order, policy
# version and matched reasons (cds_service.audit.decision_key).
shown_decisions = Table(
    "shown_decisions",
    metadata,
    Column("decision_key", String(HASH), primary_key=True),
    Column("shown_at", UtcDateTime(), nullable=False),
    Column("card_uuid", String(UUID), nullable=False),
)

# JWT ids already accepted, shared by every worker and instance on the database (CDS Hooks 2.0:
# jti "used to protect against replay attacks"). Keyed by a hash of issuer and jti, so neither
# length nor content of what a client sends decides the key; rows are purged once expired.
jwt_replay = Table(
    "jwt_replay",
    metadata,
    Column("token_key", String(HASH), primary_key=True),
    Column("expires_at", UtcDateTime(), nullable=False, index=True),
)

# Tables written through audit batches, in the order rows must be written (parents first).
WRITE_ORDER: tuple[Table, ...] = (hook_calls, cards, card_orders, feedback, feedback_suggestions, shown_decisions)
TABLES = {table.name: table for table in WRITE_ORDER}
# Tables written directly, because the caller needs the answer at once.
DIRECT_TABLES: tuple[Table, ...] = (jwt_replay,)
