"""The store on SQLite and on a real PostgreSQL server: migrations, schema checks, idempotent
writes, the spool, the db commands, and the report's figures against known rows."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select

from cds_service.cli import main
from cds_service.config import Settings
from cds_service.report import build_report, parse_bound, render_csv, render_table
from cds_service.storage import SchemaOutOfDate, StorageError, Store
from cds_service.storage.schema import head_revision
from cds_service.storage.spool import Batch
from cds_service.storage.store import database_url as resolve_url
from cds_service.storage.tables import (
    DIRECT_TABLES,
    TABLES,
    card_orders,
    cards,
    feedback,
    feedback_suggestions,
    hook_calls,
    metadata,
)

HEAD = head_revision()
SELECT_ID = "medical-policy-order-select"
SIGN_ID = "medical-policy-order-sign"


def settings(url: str, data_dir: Path, **extra: Any) -> Settings:
    return Settings(database_url=url, data_dir=data_dir, **extra)


@pytest.fixture
def store(database_url: str, data_dir: Path) -> Store:
    return Store.open(settings(database_url, data_dir, upgrade_db=True))


def count(store: Store, table: Any) -> int:
    with store.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(table)) or 0)


def at(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)


def card_batch(
    card: str, *, service: str, patient: str, issued: str, suggestions: tuple[str, ...] = (), policy: str = "SURG.00126"
) -> Batch:
    call = str(uuid.uuid4())
    return {
        "hook_calls": [
            {
                "id": call,
                "called_at": at(issued),
                "service_id": service,
                "hook": "order-sign",
                "hook_instance": str(uuid.uuid4()),
                "client": None,
                "fhir_origin": "https://ehr.example.org",
                "patient_hash": patient,
                "user_hash": "u" * 64,
            }
        ],
        "cards": [
            {
                "uuid": card,
                "hook_call_id": call,
                "service_id": service,
                "policy_id": policy,
                "policy_version": "2024-04-01",
                "issued_at": at(issued),
                "override_reasons": [{"system": "urn:test", "code": "clinical-trial"}],
            }
        ],
        "card_orders": [
            {
                "card_uuid": card,
                "position": i,
                "order_ref": f"ServiceRequest/{s}",
                "suggestion_uuid": s,
                "reasons": [{"kind": "code", "system": "CPT", "code": "0600T"}],
            }
            for i, s in enumerate(suggestions)
        ],
    }


def feedback_batch(
    card: str,
    outcome: str,
    when: str,
    *,
    service: str,
    known: bool = True,
    reason: str | None = None,
    accepted: tuple[str, ...] = (),
) -> Batch:
    fid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{card}/{outcome}/{when}"))
    return {
        "feedback": [
            {
                "id": fid,
                "service_id": service,
                "card_uuid": card,
                "outcome": outcome,
                "outcome_at": at(when),
                "received_at": at(when),
                "card_known": known,
                "reason_system": "urn:test" if reason else None,
                "reason_code": reason,
                "has_comment": False,
                "client": None,
            }
        ],
        "feedback_suggestions": [{"feedback_id": fid, "suggestion_uuid": s} for s in accepted],
    }


class TestSchema:
    def test_migrations_create_exactly_the_declared_tables(self, store):
        with store.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
        assert differences == []
        assert store.schema().up_to_date

    def test_an_out_of_date_database_is_refused_with_what_to_do(self, database_url, data_dir):
        with pytest.raises(
            SchemaOutOfDate, match=rf"at revision none, this version needs {HEAD}: run `cds-service db up"
        ):
            Store.open(settings(database_url, data_dir))
        upgraded = Store.open(settings(database_url, data_dir, upgrade_db=True))
        assert upgraded.schema().current == HEAD
        assert Store.open(settings(database_url, data_dir)).schema().up_to_date

    def test_the_embedded_database_is_created_and_migrated_on_first_use(self, data_dir):
        store = Store.open(Settings(data_dir=data_dir))
        assert store.embedded
        assert store.schema().up_to_date
        assert (data_dir / "cds-service.sqlite3").is_file()

    def test_db_status_and_upgrade_commands(self, database_url, monkeypatch, capsys):
        monkeypatch.setenv("CDS_DATABASE_URL", database_url)
        assert main(["db", "status"]) == 1
        assert "out of date: run `cds-service db upgrade`" in capsys.readouterr().out
        assert main(["db", "upgrade"]) == 0
        assert f"schema at {HEAD}" in capsys.readouterr().out
        assert main(["db", "status"]) == 0
        out = capsys.readouterr().out
        assert f"{HEAD} (this version needs {HEAD}; up to date)" in out
        assert "0 batch(es) waiting, 0 rejected" in out

    @pytest.mark.parametrize(
        ("given", "driver"),
        [
            ("postgresql://u:secret@127.0.0.1/db", "postgresql+psycopg"),
            ("postgres://u:secret@127.0.0.1/db", "postgresql+psycopg"),
            ("postgresql+psycopg://u@127.0.0.1/db", "postgresql+psycopg"),
            ("sqlite:////tmp/x.sqlite3", "sqlite"),
        ],
    )
    def test_database_urls_use_psycopg_3(self, given, driver, tmp_path):
        url, embedded = resolve_url(Settings(database_url=given, data_dir=tmp_path))
        assert (url.drivername, embedded) == (driver, False)
        assert "secret" not in Store.create(Settings(database_url=given, data_dir=tmp_path)).location

    @pytest.mark.parametrize("given", ["mysql://u@127.0.0.1/db", "not a url"])
    def test_unsupported_databases_are_a_start_up_error(self, given, tmp_path, capsys, monkeypatch):
        with pytest.raises(StorageError):
            Store.open(Settings(database_url=given, data_dir=tmp_path))
        monkeypatch.setenv("CDS_DATABASE_URL", given)
        assert main(["db", "upgrade"]) == 2
        assert capsys.readouterr().err.startswith("cds-service: ")

    def test_an_unreachable_database_is_a_clear_start_up_error(self, tmp_path):
        from tests.pgserver import free_port  # noqa: PLC0415

        url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
        with pytest.raises(StorageError, match=r"cannot use the database postgresql\+psycopg://postgres@127\.0\.0\.1"):
            Store.open(Settings(database_url=url, data_dir=tmp_path))


class TestWrites:
    def test_the_same_batch_written_twice_is_one_set_of_rows(self, store):
        batch = card_batch("card-1", service=SIGN_ID, patient="p" * 64, issued="2026-01-05", suggestions=("s1", "s2"))
        batch |= feedback_batch("card-1", "accepted", "2026-01-05T10:00:00", service=SIGN_ID, accepted=("s1",))
        store.write(batch)
        store.write(batch)
        assert [count(store, t) for t in (hook_calls, cards, card_orders, feedback, feedback_suggestions)] == [
            1,
            1,
            2,
            1,
            1,
        ]

    def test_times_come_back_as_utc_instants(self, store):
        batch = card_batch("card-1", service=SIGN_ID, patient="p" * 64, issued="2026-01-05T23:30:00")
        batch["cards"][0]["issued_at"] = dt.datetime(2026, 1, 6, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        store.write(batch)
        with store.connect() as connection:
            issued = connection.scalar(select(cards.c.issued_at))
        assert issued == dt.datetime(2026, 1, 5, 23, 30, tzinfo=dt.UTC)
        assert issued.tzinfo is not None

    def test_spooled_batches_are_written_at_the_next_start(self, database_url, data_dir):
        first = Store.open(settings(database_url, data_dir, upgrade_db=True))
        # What a process left in the spool during an outage before it stopped.
        first.spool.append(card_batch("card-spooled", service=SIGN_ID, patient="p" * 64, issued="2026-01-05"))
        first.spool.append(feedback_batch("card-spooled", "overridden", "2026-01-05T10:00:00", service=SIGN_ID))
        assert first.spool.pending() == 2
        second = Store.open(settings(database_url, data_dir))
        assert second.spool.pending() == 0
        assert (count(second, cards), count(second, feedback)) == (1, 1)

    def test_a_batch_the_database_rejects_is_kept_as_dead_not_retried(self, store):
        orphan = card_batch("card-x", service=SIGN_ID, patient="p" * 64, issued="2026-01-05")
        del orphan["hook_calls"]  # the card's hook call is missing: a foreign key violation
        store.submit(orphan)
        assert store.flush(10)
        assert count(store, cards) == 0
        assert store.spool.pending() == 0
        ((_, error),) = store.spool.dead()
        assert "IntegrityError" in error or "ForeignKeyViolation" in error

    def test_feedback_spooled_unchecked_learns_whether_its_card_exists(self, store):
        store.write(card_batch("card-1", service=SIGN_ID, patient="p" * 64, issued="2026-01-05"))
        batch = feedback_batch("card-1", "overridden", "2026-01-05T10:00:00", service=SIGN_ID)
        batch["feedback"].extend(
            feedback_batch("card-2", "overridden", "2026-01-05T10:00:00", service=SIGN_ID)["feedback"]
        )
        for row in batch["feedback"]:
            row["card_known"] = None
        store.write(batch)
        with store.connect() as connection:
            known = dict(connection.execute(select(feedback.c.card_uuid, feedback.c.card_known)).all())
        assert known == {"card-1": True, "card-2": False}


class TestReport:
    """Known rows in, exact figures out."""

    @pytest.fixture
    def filled(self, store):
        h1, h2, h3, h4, h5 = (str(n) * 64 for n in range(1, 6))
        rows = [
            card_batch("A", service=SELECT_ID, patient=h1, issued="2026-01-05", suggestions=("sa1", "sa2")),
            card_batch("B", service=SELECT_ID, patient=h1, issued="2026-01-06", suggestions=("sb1",)),
            card_batch("C", service=SELECT_ID, patient=h2, issued="2026-01-07", suggestions=("sc1",)),
            card_batch("D", service=SELECT_ID, patient=h3, issued="2026-01-08"),
            card_batch("E", service=SELECT_ID, patient=h2, issued="2026-02-02"),
            card_batch("F", service=SIGN_ID, patient=h4, issued="2026-01-10", suggestions=("sf1",)),
            card_batch("G", service=SIGN_ID, patient=h4, issued="2026-01-11"),
            card_batch("H", service=SIGN_ID, patient=h5, issued="2026-01-12", suggestions=("sh1",), policy="TEST.1"),
            # A: both orders removed; the same feedback arrives twice.
            feedback_batch("A", "accepted", "2026-01-05T10:00", service=SELECT_ID, accepted=("sa1", "sa2")),
            feedback_batch("A", "accepted", "2026-01-05T10:00", service=SELECT_ID, accepted=("sa1", "sa2")),
            feedback_batch("B", "overridden", "2026-01-06T10:00", service=SELECT_ID, reason="clinical-trial"),
            # C overridden twice, with two reasons: one card overridden, counted under both reasons.
            feedback_batch("C", "overridden", "2026-01-07T10:00", service=SELECT_ID, reason="clinical-trial"),
            feedback_batch("C", "overridden", "2026-01-07T11:00", service=SELECT_ID, reason="patient-informed"),
            # D's feedback went to the other service: not the card's, so D has no outcome.
            feedback_batch("D", "accepted", "2026-01-08T10:00", service=SIGN_ID, known=False, accepted=("x",)),
            feedback_batch("E", "overridden", "2026-02-02T10:00", service=SELECT_ID),
            # "not-ours" is no suggestion of F's: not an order removed.
            feedback_batch("F", "accepted", "2026-01-10T10:00", service=SIGN_ID, accepted=("sf1", "not-ours")),
            feedback_batch("G", "overridden", "2026-01-11T10:00", service=SIGN_ID),
            feedback_batch("H", "accepted", "2026-01-12T10:00", service=SIGN_ID, accepted=("sh1",)),
            feedback_batch("zzz", "overridden", "2026-01-15T10:00", service=SIGN_ID, known=False),
            feedback_batch("yyy", "overridden", "2026-02-15T10:00", service=SIGN_ID, known=False),
        ]
        for batch in rows:
            store.write(batch)
        return store

    def test_figures_for_january(self, filled):
        with filled.connect() as connection:
            report = build_report(connection, parse_bound("2026-01-01"), parse_bound("2026-01-31", end=True))
        assert [r.as_dict() for r in report.rows] == [
            {
                "policy": "SURG.00126",
                "service": SELECT_ID,
                "cards_issued": 4,
                "distinct_patients": 3,
                "accepted": 1,
                "overridden": 2,
                "overridden_by_reason": {"clinical-trial": 2, "patient-informed": 1},
                "override_rate": 0.6667,
                "orders_removed": 2,
            },
            {
                "policy": "SURG.00126",
                "service": SIGN_ID,
                "cards_issued": 2,
                "distinct_patients": 1,
                "accepted": 1,
                "overridden": 1,
                "overridden_by_reason": {"(none)": 1},
                "override_rate": 0.5,
                "orders_removed": 1,
            },
            {
                "policy": "TEST.1",
                "service": SIGN_ID,
                "cards_issued": 1,
                "distinct_patients": 1,
                "accepted": 1,
                "overridden": 0,
                "overridden_by_reason": {},
                "override_rate": 0.0,
                "orders_removed": 1,
            },
        ]
        assert report.feedback_for_unknown_cards == 2

    def test_figures_without_bounds_include_february(self, filled):
        with filled.connect() as connection:
            report = build_report(connection, None, None)
        first = report.rows[0].as_dict()
        assert (first["cards_issued"], first["distinct_patients"], first["overridden"]) == (5, 3, 3)
        assert first["overridden_by_reason"] == {"(none)": 1, "clinical-trial": 2, "patient-informed": 1}
        assert report.feedback_for_unknown_cards == 3

    def test_an_empty_period(self, filled):
        with filled.connect() as connection:
            report = build_report(connection, parse_bound("2025-01-01"), parse_bound("2025-12-31", end=True))
        assert report.rows == ()
        assert "No cards were issued in this period." in render_table(report)
        assert render_csv(report).splitlines() == [
            "policy,service,cards_issued,distinct_patients,accepted,overridden,override_rate,orders_removed"
        ]

    def test_the_command_in_every_format(self, filled, database_url, monkeypatch, capsys):
        monkeypatch.setenv("CDS_DATABASE_URL", database_url)
        period = ["--since", "2026-01-01", "--until", "2026-01-31"]

        assert main(["report", *period, "--format", "json"]) == 0
        as_json = json.loads(capsys.readouterr().out)
        assert as_json["since"] == "2026-01-01T00:00:00+00:00"
        assert as_json["until"] == "2026-02-01T00:00:00+00:00"
        assert [r["cards_issued"] for r in as_json["rows"]] == [4, 2, 1]
        assert as_json["feedback_for_unknown_cards"] == 2

        assert main(["report", *period, "--format", "csv"]) == 0
        rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
        assert rows[0] == {
            "policy": "SURG.00126",
            "service": SELECT_ID,
            "cards_issued": "4",
            "distinct_patients": "3",
            "accepted": "1",
            "overridden": "2",
            "override_rate": "0.6667",
            "orders_removed": "2",
            "overridden:(none)": "0",
            "overridden:clinical-trial": "2",
            "overridden:patient-informed": "1",
        }
        assert rows[2]["override_rate"] == "0.0000"

        assert main(["report", *period]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0] == "Cards issued from 2026-01-01T00:00:00+00:00 until 2026-02-01T00:00:00+00:00"
        header = table[2].split()
        assert header[:2] == ["policy", "service"]
        assert table[3].split() == ["SURG.00126", SELECT_ID, "4", "3", "1", "2", "66.7%", "2"]
        assert table[5].split() == ["TEST.1", SIGN_ID, "1", "1", "1", "0", "0.0%", "1"]
        assert ["SURG.00126", SELECT_ID, "patient-informed", "1"] in [line.split() for line in table]
        assert table[-1] == "Feedback for cards this service did not issue: 2"

    def test_bad_dates_are_usage_errors(self, capsys):
        with pytest.raises(SystemExit) as exit_:
            main(["report", "--since", "last tuesday"])
        assert exit_.value.code == 2
        assert "'last tuesday' is not a date" in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("value", "end", "expected"),
        [
            ("2026-01-31", False, "2026-01-31T00:00:00+00:00"),
            ("2026-01-31", True, "2026-02-01T00:00:00+00:00"),
            ("2026-01-31T12:00:00", True, "2026-01-31T12:00:00+00:00"),
            ("2026-01-31T12:00:00+02:00", False, "2026-01-31T10:00:00+00:00"),
        ],
    )
    def test_period_bounds(self, value, end, expected):
        assert parse_bound(value, end=end).isoformat() == expected


def test_every_table_is_written_in_a_declared_order():
    assert set(TABLES) | {t.name for t in DIRECT_TABLES} == set(metadata.tables)


class TestBackgroundWriter:
    """The writer groups queued batches into one transaction and keeps its queue bounded."""

    @pytest.fixture
    def held(self, store, monkeypatch):
        """The writer's first database write waits until the test lets it go."""
        release, calls = threading.Event(), []
        write = store.write

        def held_write(batch):
            calls.append(batch)
            if len(calls) == 1:
                release.wait(10)
            write(batch)

        monkeypatch.setattr(store, "write", held_write)
        return release, calls

    def test_queued_batches_are_written_in_one_transaction(self, store, held):
        release, calls = held
        for _ in range(40):
            store.submit(card_batch(str(uuid.uuid4()), service=SIGN_ID, patient="p" * 64, issued="2026-01-05"))
        release.set()
        assert store.flush(20)
        assert count(store, hook_calls) == 40
        # The first group (whatever joined it in its linger), then everything queued behind it.
        assert len(calls) <= 2
        assert sum(len(batch["hook_calls"]) for batch in calls) == 40

    def test_batches_arriving_within_the_linger_share_a_transaction(self, store, monkeypatch):
        from cds_service.storage import writer  # noqa: PLC0415

        monkeypatch.setattr(writer, "GROUP_LINGER_SECONDS", 0.3)
        calls = []
        write = store.write
        monkeypatch.setattr(store, "write", lambda batch: (calls.append(batch), write(batch)))
        for _ in range(5):
            store.submit(card_batch(str(uuid.uuid4()), service=SIGN_ID, patient="p" * 64, issued="2026-01-05"))
            time.sleep(0.01)  # one hook call after another, none queued behind a busy writer
        assert store.flush(20)
        assert count(store, hook_calls) == 5
        assert len(calls) == 1

    def test_a_batch_still_gathering_its_group_at_exit_is_spooled(self, store, monkeypatch):
        from cds_service.storage import writer  # noqa: PLC0415

        monkeypatch.setattr(writer, "GROUP_LINGER_SECONDS", 5.0)
        monkeypatch.setattr(writer, "CLOSE_SECONDS", 0.2)
        store.submit(card_batch(str(uuid.uuid4()), service=SIGN_ID, patient="p" * 64, issued="2026-01-05"))
        time.sleep(0.1)  # the writer has taken it off the queue and is waiting for more
        store.writer.close()
        assert store.spool.pending() == 1

    def test_a_full_queue_spills_to_the_spool_and_loses_nothing(self, store, held, monkeypatch):
        from cds_service.storage import writer  # noqa: PLC0415

        monkeypatch.setattr(writer, "QUEUE_MAX", 5)
        monkeypatch.setattr(writer, "RETRY_SECONDS", 0.2)
        release, _ = held
        for _ in range(20):
            store.submit(card_batch(str(uuid.uuid4()), service=SIGN_ID, patient="p" * 64, issued="2026-01-05"))
        # At most QUEUE_MAX wait in memory; the rest (and, once the writer is told to retry the
        # spool, whatever it had gathered) went to disk.
        assert 15 <= store.spool.pending() <= 20
        release.set()
        deadline = time.monotonic() + 20
        while (count(store, hook_calls) < 20 or store.spool.pending()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert count(store, hook_calls) == 20
        assert store.spool.pending() == 0
