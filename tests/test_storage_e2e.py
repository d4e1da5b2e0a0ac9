"""Real `cds-service serve` processes on a real PostgreSQL server: the schema gate, two
instances sharing one database under concurrent feedback, and a database outage in the middle of
hook calls (the PostgreSQL server is stopped and started again)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
import requests
from sqlalchemy import String, cast, create_engine, func, select
from sqlalchemy.engine import Engine

from cds_service.storage.spool import Spool
from cds_service.storage.store import SPOOL_FILE
from cds_service.storage.tables import card_orders, feedback, feedback_suggestions, hook_calls, metadata
from tests.conftest import assert_valid_response, hook_request, service_request
from tests.pgserver import PostgresServer, find_bindir
from tests.servers import Server, run_cli

pytestmark = pytest.mark.e2e
SIGN = "/cds-services/medical-policy-order-sign"
IRE = service_request("sr-ire", code="0600T", display="Ablation, irreversible electroporation")
KEY = "e2e-shared-key-" + "9" * 32
CONCURRENCY = 16


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    """Poll until ``condition`` holds; the audit trail is written in the background."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds:.0f} s: {what}")
        time.sleep(0.2)


def count(engine: Engine, table: Any, *where: Any) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(table).where(*where)) or 0)


def sign(server: Server, patient: str) -> dict[str, Any]:
    body = hook_request(IRE)
    body["context"]["patientId"] = patient
    response = requests.post(f"{server.url}{SIGN}", json=body, timeout=10)
    assert response.status_code == 200, response.text
    assert_valid_response(response.json())
    (card,) = response.json()["cards"]
    return card


def post_feedback(server: Server, item: dict[str, Any]) -> requests.Response:
    return requests.post(f"{server.url}{SIGN}/feedback", json={"feedback": [item]}, timeout=20)


def items_for(card: dict[str, Any]) -> list[dict[str, Any]]:
    """Three distinct pieces of feedback about one card."""
    system = card["overrideReasons"][0]["system"]
    return [
        {
            "card": card["uuid"],
            "outcome": "overridden",
            "overrideReason": {"reason": {"system": system, "code": code}},
            "outcomeTimestamp": when,
        }
        for code, when in (("clinical-trial", "2026-11-26T10:00:00Z"), ("patient-informed", "2026-11-26T10:01:00Z"))
    ] + [
        {
            "card": card["uuid"],
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
            "outcomeTimestamp": "2026-11-26T10:02:00Z",
        }
    ]


def assert_no_clear_ids(engine: Engine, ids: list[str]) -> None:
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            for column in table.columns:
                text = cast(column, String)
                for clear in ids:
                    assert connection.scalar(select(func.count()).where(text.contains(clear))) == 0, (clear, table.name)


@pytest.fixture
def database(postgres: PostgresServer) -> Iterator[str]:
    name = f"cds_e2e_{uuid.uuid4().hex[:10]}"
    yield postgres.create_database(name)
    postgres.drop_database(name)


def test_two_instances_on_one_database_store_every_write_once(database, tmp_path):
    env = {"CDS_DATABASE_URL": database, "CDS_ID_HASH_KEY": KEY}

    refused = run_cli("serve", "--port", "9", env={**env, "CDS_DATA_DIR": str(tmp_path / "a")})
    assert refused.returncode == 2
    assert "run `cds-service db upgrade` first (or start with --upgrade-db)" in refused.stderr
    upgraded = run_cli("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr

    servers = [Server(tmp_path / f"{n}.log", {**env, "CDS_DATA_DIR": str(tmp_path / n)}) for n in ("a", "b")]
    engine = create_engine(database.replace("postgresql://", "postgresql+psycopg://"))
    try:
        messages = [line["message"] for line in servers[0].log_records()]
        assert any(m.startswith("database postgresql+psycopg://postgres@127.0.0.1") for m in messages), messages
        patients = [f"patient-{uuid.uuid4().hex[:8]}" for _ in range(40)]
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            cards = list(pool.map(lambda i: sign(servers[i % 2], patients[i]), range(len(patients))))
        wait_for(lambda: count(engine, card_orders) == len(cards), "every card recorded")

        # 120 distinct pieces of feedback, each sent to both instances, a third of them three times.
        items = [item for card in cards for item in items_for(card)]
        posts = (
            [(servers[0], i) for i in items] + [(servers[1], i) for i in items] + [(servers[0], i) for i in items[::3]]
        )
        assert len(posts) == 280
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            responses = list(pool.map(lambda post: post_feedback(*post), posts))
        assert [r.status_code for r in responses] == [200] * len(posts), {r.text for r in responses}

        assert count(engine, hook_calls) == len(patients)
        assert count(engine, feedback) == len(items)
        assert count(engine, feedback, feedback.c.card_known.is_(True)) == len(items)
        assert count(engine, feedback_suggestions) == len(cards)
        assert_no_clear_ids(engine, patients)

        report = run_cli("report", "--format", "json", env=env)
        assert report.returncode == 0, report.stderr
        (row,) = json.loads(report.stdout)["rows"]
        assert (row["cards_issued"], row["distinct_patients"], row["accepted"], row["overridden"]) == (40, 40, 40, 40)
        assert row["overridden_by_reason"] == {"clinical-trial": 40, "patient-informed": 40}
        assert row["orders_removed"] == 40
    finally:
        engine.dispose()
        codes = [server.stop() for server in servers]
    assert codes == [0, 0], servers[0].output() + servers[1].output()


@pytest.fixture
def private_postgres(postgres: PostgresServer) -> Iterator[PostgresServer]:
    """A server of its own (it is stopped mid-test); `postgres` is only asked for the programs."""
    bindir = find_bindir()
    assert bindir is not None
    server = PostgresServer(bindir)
    server.start()
    yield server
    server.destroy()


def test_a_database_outage_loses_no_audit_record(private_postgres, tmp_path):
    database = private_postgres.create_database("cds_outage")
    data_dir = tmp_path / "data"
    env = {"CDS_DATABASE_URL": database, "CDS_ID_HASH_KEY": KEY, "CDS_DATA_DIR": str(data_dir)}
    server = Server(tmp_path / "serve.log", env, "--upgrade-db")
    engine = create_engine(database.replace("postgresql://", "postgresql+psycopg://"))
    spool = Spool(data_dir / SPOOL_FILE)
    try:
        sign(server, "patient-before")
        wait_for(lambda: count(engine, hook_calls) == 1, "the first call recorded")
        engine.dispose()

        private_postgres.stop()
        # The clinician still gets every card, and feedback is still received.
        cards = [sign(server, f"patient-during-{n}") for n in range(12)]
        for card in cards[:6]:
            response = post_feedback(server, items_for(card)[0])
            assert (response.status_code, response.json()) == (200, {"received": 1})
        wait_for(lambda: spool.pending() == 18, "12 hook calls and 6 feedback in the local spool")

        private_postgres.start()
        wait_for(lambda: count(engine, hook_calls) == 13, "the spooled hook calls written")
        wait_for(lambda: count(engine, feedback) == 6, "the spooled feedback written")
        wait_for(lambda: spool.pending() == 0, "the spool emptied")
        # Feedback spooled unchecked learned that its cards were issued here.
        assert count(engine, feedback, feedback.c.card_known.is_(True)) == 6
        assert spool.dead() == []
        assert "database unreachable" in server.output()
    finally:
        engine.dispose()
        code = server.stop()
    assert code == 0, server.output()


def test_a_stuck_database_neither_delays_the_card_nor_loses_the_record_at_shutdown(database, tmp_path):
    data_dir = tmp_path / "data"
    env = {"CDS_DATABASE_URL": database, "CDS_ID_HASH_KEY": KEY, "CDS_DATA_DIR": str(data_dir)}
    server = Server(tmp_path / "serve.log", env, "--upgrade-db", workers=1)
    engine = create_engine(database.replace("postgresql://", "postgresql+psycopg://"))
    try:
        sign(server, "patient-first")
        wait_for(lambda: count(engine, hook_calls) == 1, "the first call recorded")
        with psycopg.connect(database) as blocker:
            # Every write to hook_calls now waits for this transaction.
            blocker.execute("LOCK TABLE hook_calls IN ACCESS EXCLUSIVE MODE")
            sign(server, "patient-stuck")  # answered although its audit record cannot be written
            assert server.stop() == 0, server.output()
            blocker.rollback()
        spool = Spool(data_dir / SPOOL_FILE)
        assert spool.pending() == 1
        assert "database slow at exit: 1 batch(es) kept in the spool" in server.output()

        # The next start (here `db upgrade`, which opens the store the same way) writes it.
        assert run_cli("db", "upgrade", env=env).returncode == 0
        assert count(engine, hook_calls) == 2
        assert spool.pending() == 0
    finally:
        engine.dispose()
        server.stop()
