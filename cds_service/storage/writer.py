"""The background writer: audit records reach the database without the clinician waiting.

A hook call only puts its batch on an in-process queue (microseconds); a thread writes it. When
the database is unreachable the batch goes to the local spool and the thread tries the spool again
every ``RETRY_SECONDS`` until the database is back. The thread is started on first use in each
process (gunicorn forks workers after start-up, and threads do not survive a fork) and ends after
``IDLE_SECONDS`` without work. At exit, ``close`` waits briefly and spools whatever is still
queued, so a graceful shutdown loses nothing.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

if TYPE_CHECKING:
    from cds_service.storage.spool import Batch
    from cds_service.storage.store import Store

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0
IDLE_SECONDS = 30.0
CLOSE_SECONDS = 5.0  # well inside gunicorn's graceful_timeout
# Batches written in one transaction when they queue up: one commit instead of one each, so the
# writer keeps up with a busy worker instead of falling behind.
GROUP_MAX = 256
# How long the thread waits for more batches to join a group once one has arrived. Under load this
# turns a transaction per hook call into one per 20 ms (about 180 µs less CPU per card-issuing call
# on a busy worker, bench/RESULTS.md); a record still reaches the database within milliseconds.
GROUP_LINGER_SECONDS = 0.02
# Past this many unwritten batches a worker's memory would keep growing; further batches go to
# the spool on disk (and are written from there), so the queue stays bounded and nothing is lost.
QUEUE_MAX = 5000


def merge(group: list[Batch]) -> Batch:
    """One batch holding every row of ``group`` (rows are idempotent inserts, so order within a
    table does not matter)."""
    merged: Batch = {}
    for batch in group:
        for table, rows in batch.items():
            merged.setdefault(table, []).extend(rows)
    return merged


def describe(error: BaseException) -> str:
    """The driver's own message (connection refused, ...) without SQLAlchemy's statement and
    parameters, which may carry hashed ids."""
    if isinstance(error, DBAPIError) and error.orig is not None:
        return f"{type(error.orig).__name__}: {str(error.orig).strip()}"
    return type(error).__name__


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` means "the database cannot be reached now" (spool and retry later)."""
    if isinstance(error, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


class BackgroundWriter:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._queue: queue.SimpleQueue[Batch] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._current: list[Batch] = []  # the batches the thread is writing now
        # While set, the database is believed down: batches go straight to the spool, and the
        # spool is retried at this monotonic time.
        self._retry_at: float | None = None

    def _ensure_thread(self) -> None:
        """Start the thread if this process has none (the caller holds the lock)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cds-audit-writer", daemon=True)
            self._thread.start()

    def submit(self, batch: Batch) -> None:
        if self._pid != os.getpid():
            self._reset()
        with self._lock:
            overloaded = self._pending >= QUEUE_MAX
            if not overloaded:
                self._pending += 1
                self._queue.put(batch)
                self._ensure_thread()
        if overloaded:
            log.warning("audit writer behind by %d batches; this one goes to the spool", QUEUE_MAX)
            self._store.spool.append(batch)
            self.retry_later()

    def retry_later(self) -> None:
        """Something was spooled outside the thread: make sure the spool is retried."""
        if self._pid != os.getpid():
            self._reset()
        with self._lock:
            if self._retry_at is None:
                self._retry_at = time.monotonic() + RETRY_SECONDS
            self._ensure_thread()

    def flush(self, timeout: float) -> bool:
        """Wait until every submitted batch is written or spooled; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._idle.wait(remaining):
                    return False
        return True

    def close(self) -> None:
        """At exit: let the thread finish, then spool whatever it could not write in time.

        The batch being written may still commit after all; spooling it too is harmless, since
        every write is idempotent.
        """
        if self._pid != os.getpid() or self.flush(CLOSE_SECONDS):
            return
        left = []
        while True:
            try:
                left.append(self._queue.get_nowait())
            except queue.Empty:
                break
        # After the queue: a batch the thread took meanwhile is in its group by now.
        left += self._current
        for batch in left:
            self._store.spool.append(batch)
        log.warning("database slow at exit: %d batch(es) kept in the spool", len(left))

    def _done(self, count: int) -> None:
        with self._idle:
            self._pending -= count
            self._idle.notify_all()

    def _next_timeout(self) -> float:
        if self._retry_at is None:
            return IDLE_SECONDS
        return max(0.0, self._retry_at - time.monotonic())

    def _run(self) -> None:
        while True:
            if self._retry_at is not None and time.monotonic() >= self._retry_at:
                self._replay()
            try:
                batch = self._queue.get(timeout=self._next_timeout())
            except queue.Empty:
                with self._lock:
                    if self._retry_at is None and self._queue.empty():
                        self._thread = None
                        return
                continue
            # _current is the group itself, so close() sees every batch taken off the queue.
            self._current = group = [batch]
            gather_until = time.monotonic() + GROUP_LINGER_SECONDS
            while len(group) < GROUP_MAX:
                wait = gather_until - time.monotonic()
                try:
                    group.append(self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write_group(group)
            except Exception:
                # Database down and the spool unwritable (disk full): the one case that loses a record.
                log.exception("audit batch lost: neither the database nor the spool took it")
            finally:
                self._current = []
                self._done(len(group))

    def _write_group(self, group: list[Batch]) -> None:
        """Several batches in one transaction; if the database rejects the whole, each on its own,
        so only a batch it really rejects is set aside."""
        if len(group) > 1 and self._retry_at is None:
            try:
                self._store.write(merge(group))
                return
            except Exception as exc:
                if is_transient(exc):
                    self._database_down(exc)
        for batch in group:
            self._write(batch)

    def _write(self, batch: Batch) -> None:
        if self._retry_at is None:
            try:
                self._store.write(batch)
                return
            except Exception as exc:
                if not is_transient(exc):
                    log.error("audit batch rejected by the database (%s); kept in the spool", type(exc).__name__)
                    self._store.spool.append(batch, error=describe(exc)[:500])
                    return
                self._database_down(exc)
        self._store.spool.append(batch)

    def _database_down(self, exc: BaseException) -> None:
        """From now until the retry, batches go straight to the spool."""
        log.warning("database unreachable (%s); audit records go to the spool", type(exc).__name__)
        with self._lock:
            self._retry_at = time.monotonic() + RETRY_SECONDS

    def _replay(self) -> None:
        try:
            self._store.replay_spool()
        except Exception as exc:
            if is_transient(exc):
                log.info("database still unreachable (%s); retrying in %.0f s", type(exc).__name__, RETRY_SECONDS)
            else:
                log.exception("replaying the audit spool failed; retrying in %.0f s", RETRY_SECONDS)
            with self._lock:
                self._retry_at = time.monotonic() + RETRY_SECONDS
            return
        with self._lock:
            self._retry_at = None
