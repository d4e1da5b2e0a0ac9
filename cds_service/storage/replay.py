"""The JWT replay cache on the database: one accepted ``jti`` per issuer, across every worker of
every instance that shares the database."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable

from sqlalchemy import delete
from sqlalchemy.exc import SQLAlchemyError

from cds_service.auth import MemoryReplayCache
from cds_service.storage.store import Store, insert_ignoring_duplicates
from cds_service.storage.tables import jwt_replay

log = logging.getLogger(__name__)
PURGE_EVERY_S = 60.0


def token_key(issuer: str, jti: str) -> str:
    return hashlib.sha256(f"{issuer}\n{jti}".encode()).hexdigest()


class SqlReplayCache:
    """Claims a ``jti`` with one INSERT ... ON CONFLICT DO NOTHING: the database's primary key makes
    "first one wins" atomic, whichever worker or instance asks.

    If the database cannot be reached the check falls back to this worker's memory, logged: a
    database outage must not stop clinicians getting cards (the audit trail spools for the same
    reason), and the replay window of a 5-minute token on one worker stays closed.
    """

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._fallback = MemoryReplayCache(clock)
        self._next_purge = 0.0

    def claim(self, issuer: str, jti: str, expires_at: float) -> bool:
        now = self._clock()
        key = token_key(issuer, jti)
        expires = dt.datetime.fromtimestamp(expires_at, dt.UTC)
        now_dt = dt.datetime.fromtimestamp(now, dt.UTC)
        try:
            with self._store.connect() as connection:
                if now >= self._next_purge:
                    connection.execute(delete(jwt_replay).where(jwt_replay.c.expires_at < now_dt))
                    self._next_purge = now + PURGE_EVERY_S
                # RETURNING says whether the row went in (rowcount is not reliable for ON CONFLICT
                # DO NOTHING on every driver).
                insert = insert_ignoring_duplicates(connection, jwt_replay).returning(jwt_replay.c.token_key)
                if connection.execute(insert.values(token_key=key, expires_at=expires)).first() is not None:
                    self._fallback.claim(issuer, jti, expires_at)  # known here too, should the database go
                    return True
                # Taken. A row that has expired (not purged yet) no longer protects anything.
                stale = delete(jwt_replay).where(jwt_replay.c.token_key == key, jwt_replay.c.expires_at < now_dt)
                connection.execute(stale)
                return connection.execute(insert.values(token_key=key, expires_at=expires)).first() is not None
        except SQLAlchemyError as exc:
            log.warning("jti replay check fell back to this worker's memory: database %s", type(exc).__name__)
            return self._fallback.claim(issuer, jti, expires_at)
