"""``cds-service db upgrade`` and ``cds-service db status``."""

from __future__ import annotations

import argparse

from cds_service.config import Settings
from cds_service.storage.store import Store

EXIT_OUT_OF_DATE = 1


def _upgrade(_args: argparse.Namespace) -> int:
    store = Store.open(Settings.from_env(upgrade_db=True))
    print(f"{store.location}: schema at {store.schema().current}")
    return 0


def _status(_args: argparse.Namespace) -> int:
    """Schema revision and spool, without changing anything; exit 1 if the schema is behind."""
    store = Store.create(Settings.from_env())
    try:
        state = store.schema()
    finally:
        store.engine.dispose()
    verdict = "up to date" if state.up_to_date else "out of date: run `cds-service db upgrade`"
    print(f"database  {store.location}")
    print(f"schema    {state.current or 'none'} (this version needs {state.head}; {verdict})")
    waiting, rejected = store.spool.pending(), len(store.spool.dead())
    print(f"spool     {store.spool.path}: {waiting} batch(es) waiting, {rejected} rejected")
    return 0 if state.up_to_date else EXIT_OUT_OF_DATE


def add_db_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    db = commands.add_parser(
        "db",
        help="database schema: upgrade, status",
        description="The database named by CDS_DATABASE_URL (default: the embedded SQLite file).",
    )
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    actions.add_parser("upgrade", help="apply pending migrations").set_defaults(handler=_upgrade)
    actions.add_parser("status", help="schema revision and audit spool; exit 1 if out of date").set_defaults(
        handler=_status
    )
