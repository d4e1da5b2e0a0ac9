"""Audit trail of issued cards, feedback, and the decisions order-select has shown.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cds_service.storage.tables import UtcDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "hook_calls",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("called_at", UtcDateTime(), nullable=False),
        sa.Column("service_id", sa.String(100), nullable=False),
        sa.Column("hook", sa.String(100), nullable=False),
        sa.Column("hook_instance", sa.Text(), nullable=False),
        sa.Column("client", sa.Text(), nullable=True),
        sa.Column("fhir_origin", sa.Text(), nullable=True),
        sa.Column("patient_hash", sa.String(64), nullable=False),
        sa.Column("user_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hook_calls")),
    )
    op.create_index(op.f("ix_hook_calls_called_at"), "hook_calls", ["called_at"])

    op.create_table(
        "cards",
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("hook_call_id", sa.String(36), nullable=False),
        sa.Column("service_id", sa.String(100), nullable=False),
        sa.Column("policy_id", sa.String(100), nullable=False),
        sa.Column("policy_version", sa.String(100), nullable=False),
        sa.Column("issued_at", UtcDateTime(), nullable=False),
        sa.Column("override_reasons", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["hook_call_id"], ["hook_calls.id"], name=op.f("fk_cards_hook_call_id_hook_calls")),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_cards")),
    )
    op.create_index(op.f("ix_cards_hook_call_id"), "cards", ["hook_call_id"])
    op.create_index(op.f("ix_cards_policy_id_issued_at"), "cards", ["policy_id", "issued_at"])

    op.create_table(
        "card_orders",
        sa.Column("card_uuid", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("order_ref", sa.Text(), nullable=True),
        sa.Column("suggestion_uuid", sa.String(36), nullable=True),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["card_uuid"], ["cards.uuid"], name=op.f("fk_card_orders_card_uuid_cards")),
        sa.PrimaryKeyConstraint("card_uuid", "position", name=op.f("pk_card_orders")),
        sa.UniqueConstraint("suggestion_uuid", name=op.f("uq_card_orders_suggestion_uuid")),
    )

    op.create_table(
        "feedback",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("service_id", sa.String(100), nullable=False),
        sa.Column("card_uuid", sa.String(128), nullable=False),
        sa.Column(
            "outcome",
            sa.Enum("accepted", "overridden", name="outcome", native_enum=False, create_constraint=True, length=16),
            nullable=False,
        ),
        sa.Column("outcome_at", UtcDateTime(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("card_known", sa.Boolean(), nullable=False),
        sa.Column("reason_system", sa.Text(), nullable=True),
        sa.Column("reason_code", sa.String(128), nullable=True),
        sa.Column("has_comment", sa.Boolean(), nullable=False),
        sa.Column("client", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
    )
    op.create_index(op.f("ix_feedback_card_uuid"), "feedback", ["card_uuid"])

    op.create_table(
        "feedback_suggestions",
        sa.Column("feedback_id", sa.String(36), nullable=False),
        sa.Column("suggestion_uuid", sa.String(128), nullable=False),
        sa.ForeignKeyConstraint(
            ["feedback_id"], ["feedback.id"], name=op.f("fk_feedback_suggestions_feedback_id_feedback")
        ),
        sa.PrimaryKeyConstraint("feedback_id", "suggestion_uuid", name=op.f("pk_feedback_suggestions")),
    )
    op.create_index(op.f("ix_feedback_suggestions_suggestion_uuid"), "feedback_suggestions", ["suggestion_uuid"])

    op.create_table(
        "shown_decisions",
        sa.Column("decision_key", sa.String(64), nullable=False),
        sa.Column("shown_at", UtcDateTime(), nullable=False),
        sa.Column("card_uuid", sa.String(36), nullable=False),
        sa.PrimaryKeyConstraint("decision_key", name=op.f("pk_shown_decisions")),
    )


def downgrade() -> None:
    op.drop_table("shown_decisions")
    op.drop_table("feedback_suggestions")
    op.drop_table("feedback")
    op.drop_table("card_orders")
    op.drop_table("cards")
    op.drop_table("hook_calls")
