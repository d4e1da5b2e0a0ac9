"""The local audit spool: writes the database could not take, kept until it can.

A small SQLite file beside the service (``data_dir/audit-spool.sqlite3``). SQLite gives atomic
appends and removals that several worker processes can share without locks of our own; a row is
removed only after the database has committed it, and every write is idempotent (tables.py), so a
row replayed twice, or by two processes at once, still lands exactly once.

A batch the database rejects for a reason other than being unreachable is kept as "dead": it is
never dropped, never retried in a loop, and shows in the log and in ``Spool.dead()``.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from cds_service.storage.tables import TABLES, UtcDateTime

# Rows to write, by table name, parents first (tables.WRITE_ORDER decides the order).
Batch = dict[str, list[dict[str, Any]]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    spooled_at TEXT NOT NULL,
    payload TEXT NOT NULL,
    dead INTEGER NOT NULL DEFAULT 0,
    error TEXT
)
"""


def _datetime_columns(table: str) -> frozenset[str]:
    return frozenset(c.name for c in TABLES[table].columns if isinstance(c.type, UtcDateTime))


_DATETIMES = {name: _datetime_columns(name) for name in TABLES}


def encode(batch: Batch) -> str:
    def default(value: object) -> str:
        if isinstance(value, dt.datetime):
            return value.isoformat()
        raise TypeError(f"cannot spool {type(value).__name__}")

    return json.dumps(batch, default=default, separators=(",", ":"))


def decode(payload: str) -> Batch:
    batch: Batch = json.loads(payload)
    for table, rows in batch.items():
        for row in rows:
            for column in _DATETIMES[table] & row.keys():
                if row[column] is not None:
                    row[column] = dt.datetime.fromisoformat(row[column])
    return batch


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(_SCHEMA)
            yield connection

    def append(self, batch: Batch, *, error: str | None = None) -> None:
        """Keep ``batch`` for a later write; with ``error`` it is kept as dead (never retried)."""
        with self._connect() as connection:
            connection.execute(
                "INSERT INTO spool (spooled_at, payload, dead, error) VALUES (?, ?, ?, ?)",
                (dt.datetime.now(dt.UTC).isoformat(), encode(batch), error is not None, error),
            )

    def pending(self) -> int:
        """Batches waiting to be written (without creating the file when there is none)."""
        if not self.path.exists():
            return 0
        with self._connect() as connection:
            (count,) = connection.execute("SELECT count(*) FROM spool WHERE dead = 0").fetchone()
        return int(count)

    def take(self, limit: int) -> list[tuple[int, Batch]]:
        """The oldest waiting batches; they stay in the spool until ``remove``."""
        if not self.path.exists():
            return []
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT id, payload FROM spool WHERE dead = 0 ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [(int(row_id), decode(payload)) for row_id, payload in rows]

    def remove(self, ids: list[int]) -> None:
        with self._connect() as connection:
            connection.executemany("DELETE FROM spool WHERE id = ?", [(i,) for i in ids])

    def bury(self, row_id: int, error: str) -> None:
        """Mark a batch the database rejects (not for being down) as dead: kept, not retried."""
        with self._connect() as connection:
            connection.execute("UPDATE spool SET dead = 1, error = ? WHERE id = ?", (error, row_id))

    def dead(self) -> list[tuple[int, str]]:
        if not self.path.exists():
            return []
        with self._connect() as connection:
            rows = connection.execute("SELECT id, error FROM spool WHERE dead = 1 ORDER BY id").fetchall()
        return [(int(row_id), str(error)) for row_id, error in rows]
