"""The database behind the audit trail: connection, schema check, idempotent writes, the spool.

``Store.open`` runs at start-up (``create_app``): it connects, checks the schema (the embedded
SQLite file is migrated automatically; a configured database only with ``upgrade_db``), replays
whatever an earlier process left in the spool, and closes its connections again, because gunicorn
forks its workers afterwards and a connection must never be shared across a fork.

Writes come in batches (rows by table, see ``spool.Batch``). ``submit`` hands a batch to the
background writer (the hook call never waits); ``save`` writes at once and falls back to the spool
when the database is unreachable. Either way nothing is lost and nothing is written twice.
"""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic.util import CommandError
from sqlalchemy import Connection, Engine, Insert, Table, create_engine, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from cds_service.config import Settings
from cds_service.storage.schema import SchemaState, schema_state, upgrade
from cds_service.storage.spool import Batch, Spool
from cds_service.storage.tables import WRITE_ORDER, cards, feedback
from cds_service.storage.writer import BackgroundWriter, describe, is_transient

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "cds-service.sqlite3"
SPOOL_FILE = "audit-spool.sqlite3"
_REPLAY_CHUNK = 100


class StorageError(Exception):
    """A storage problem that stops start-up; the message is safe to print."""


class SchemaOutOfDate(StorageError):
    pass


def database_url(settings: Settings) -> tuple[URL, bool]:
    """The SQLAlchemy URL to use and whether it is the embedded default."""
    if settings.database_url is None:
        path = settings.data_dir / EMBEDDED_DATABASE
        return URL.create("sqlite", database=str(path)), True
    raw = settings.database_url.get_secret_value().strip()
    try:
        url = make_url("postgresql" + raw.removeprefix("postgres") if raw.startswith("postgres://") else raw)
    except ArgumentError:
        raise StorageError("CDS_DATABASE_URL is not a database URL (e.g. postgresql://user@host/db)") from None
    # psycopg 3 is the PostgreSQL driver this service ships with.
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url, False


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets gunicorn workers read while one writes; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: URL) -> Engine:
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        # pre-ping: after a database restart, pooled connections are dead; find out before use.
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args={"connect_timeout": 3})
    raise StorageError(f"unsupported database '{backend}': use sqlite or postgresql")


def insert_ignoring_duplicates(connection: Connection, table: Table) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING: a row whose key exists already is left as it is."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def _resolve_card_known(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Feedback spooled during an outage could not look its card up; do it now."""
    unresolved = [row for row in rows if row.get("card_known") is None]
    if not unresolved:
        return
    found = connection.execute(
        select(cards.c.uuid, cards.c.service_id).where(cards.c.uuid.in_({row["card_uuid"] for row in unresolved}))
    ).all()
    issued = {(uuid, service) for uuid, service in found}
    for row in unresolved:
        row["card_known"] = (row["card_uuid"], row["service_id"]) in issued


# Stores alive in this process; weak, so an application that is dropped (tests make many) takes
# its connection pool with it.
_OPEN_STORES: weakref.WeakSet[Store] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """Queued audit records are written (or spooled) when the process exits; gunicorn workers
    exit normally on SIGTERM, so a graceful shutdown loses nothing."""
    for store in list(_OPEN_STORES):
        store.writer.close()


class Store:
    """The service's database and audit spool. One per application; safe to use from any thread."""

    def __init__(self, engine: Engine, spool: Spool, *, embedded: bool) -> None:
        self.engine = engine
        self.spool = spool
        self.embedded = embedded
        self.writer = BackgroundWriter(self)
        self._pid = os.getpid()
        _OPEN_STORES.add(self)

    @classmethod
    def create(cls, settings: Settings) -> Store:
        """The store for ``settings`` without touching the database (see ``open``)."""
        url, embedded = database_url(settings)
        return cls(make_engine(url), Spool(settings.data_dir / SPOOL_FILE), embedded=embedded)

    @classmethod
    def open(cls, settings: Settings) -> Store:
        """The store, ready: schema checked or upgraded, spool replayed. Raises StorageError."""
        store = cls.create(settings)
        try:
            state = store.schema()
            if not state.up_to_date:
                if not (store.embedded or settings.upgrade_db):
                    raise SchemaOutOfDate(
                        f"the database schema of {store.location} is at revision {state.current or 'none'}, "
                        f"this version needs {state.head}: run `cds-service db upgrade` first "
                        "(or start with --upgrade-db)"
                    )
                log.info("upgrading the database schema from %s to %s", state.current or "nothing", state.head)
                upgrade(store.engine)
            store.replay_spool()
        except CommandError as exc:
            raise StorageError(f"cannot migrate {store.location}: {exc}") from None
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot use the database {store.location}: {describe(exc)}") from None
        finally:
            # gunicorn forks its workers after start-up: no pooled connection may cross the fork.
            store.engine.dispose()
        return store

    @property
    def location(self) -> str:
        """The database URL without its password, for logs and messages."""
        return self.engine.url.render_as_string(hide_password=True)

    def schema(self) -> SchemaState:
        return schema_state(self.engine)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection in a transaction that commits on success."""
        if self._pid != os.getpid():
            # A forked child must not touch the parent's pooled connections.
            self.engine.dispose(close=False)
            self._pid = os.getpid()
        with self.engine.begin() as connection:
            yield connection

    def ping(self) -> bool:
        """Whether the database answers now (for readiness checks); never raises for an outage."""
        try:
            with self.connect() as connection:
                connection.execute(select(1))
        except SQLAlchemyError as exc:
            log.warning("database %s unreachable: %s", self.location, type(exc).__name__)
            return False
        return True

    def write(self, batch: Batch) -> None:
        """Write ``batch`` in one transaction; rows whose key exists already are skipped."""
        with self.connect() as connection:
            for table in WRITE_ORDER:
                rows = batch.get(table.name)
                if not rows:
                    continue
                if table is feedback:
                    _resolve_card_known(connection, rows)
                connection.execute(insert_ignoring_duplicates(connection, table), rows)

    def submit(self, batch: Batch) -> None:
        """Write ``batch`` in the background: returns at once, never raises for the database."""
        self.writer.submit(batch)

    def save(self, batch: Batch) -> None:
        """Write ``batch`` now; when the database is unreachable, spool it (written when it is back)."""
        try:
            self.write(batch)
        except SQLAlchemyError as exc:
            if not is_transient(exc):
                raise
            log.warning("database unreachable (%s); batch kept in the spool", type(exc).__name__)
            self.spool.append(batch)
            self.writer.retry_later()

    def flush(self, timeout: float) -> bool:
        """Wait until this process's queued batches are written or spooled."""
        return self.writer.flush(timeout)

    def replay_spool(self) -> int:
        """Write every spooled batch; raise (transient) when the database is still unreachable."""
        written = 0
        while chunk := self.spool.take(_REPLAY_CHUNK):
            done: list[int] = []
            try:
                for row_id, batch in chunk:
                    try:
                        self.write(batch)
                    except SQLAlchemyError as exc:
                        if is_transient(exc):
                            raise
                        log.error("spooled batch %d rejected by the database: %s", row_id, type(exc).__name__)
                        self.spool.bury(row_id, describe(exc)[:500])
                        continue
                    done.append(row_id)
            finally:
                if done:
                    self.spool.remove(done)
                    written += len(done)
        if written:
            log.info("wrote %d spooled batch(es) to %s", written, self.location)
        return written
