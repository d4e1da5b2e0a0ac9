"""JWT ids already accepted, for the replay check shared by all workers and instances.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cds_service.storage.tables import UtcDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jwt_replay",
        sa.Column("token_key", sa.String(64), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("token_key", name=op.f("pk_jwt_replay")),
    )
    op.create_index(op.f("ix_jwt_replay_expires_at"), "jwt_replay", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_jwt_replay_expires_at"), table_name="jwt_replay")
    op.drop_table("jwt_replay")
