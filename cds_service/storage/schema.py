"""Schema migrations with Alembic, driven through its API (no alembic.ini to find).

The migration scripts live in ``migrations/versions`` inside the package. To add one (for example
the JWT replay cache's table), declare the table in ``tables.py`` and add a revision beside
``0001`` whose ``down_revision`` is the current head;
``alembic.command.revision(alembic_config(), "message", autogenerate=...)`` with a connection in
``config.attributes["connection"]`` drafts it from ``script.py.mako``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, func, select

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Alembic announces its backend on every schema check; Store.open logs the upgrades that matter.
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
# pg_advisory_xact_lock key: instances upgrading one PostgreSQL database at once take turns.
_UPGRADE_LOCK = 0x0C_D5_5E_41


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations in {MIGRATIONS}")
    return head


@dataclass(frozen=True, slots=True)
class SchemaState:
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def schema_state(engine: Engine) -> SchemaState:
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return SchemaState(current, head_revision())


def upgrade(engine: Engine) -> SchemaState:
    """Apply every pending migration in one transaction (PostgreSQL DDL is transactional)."""
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(_UPGRADE_LOCK)))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return schema_state(engine)
