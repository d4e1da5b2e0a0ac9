"""Shared fixtures: the app, a client, request builders and the card schema."""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import settings
from pytest_httpserver import HTTPServer

from cds_service import create_app
from tests.pgserver import PostgresServer, find_bindir
from tests.servers import running_server

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CDS_SHARED_DIR", ROOT.parent / "shared"))
SANDBOX_FIXTURES = SHARED / "fixtures" / "cds-hooks-sandbox"
SCHEMA = json.loads((Path(__file__).parent / "schemas" / "cds-hooks-response.schema.json").read_text())
SELECT = "/cds-services/medical-policy-order-select"
SIGN = "/cds-services/medical-policy-order-sign"
CPT = "http://www.ama-assn.org/go/cpt"
SOPT = "https://nahdo.org/sopt"
PCS = "http://www.cms.gov/Medicare/Coding/ICD10"

# Property-based tests (hypothesis, schemathesis): bounded example counts keep the suite fast; CI
# tries more, from fixed seeds so that a failure replays. No deadlines: tests are not timed.
settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev"))


@pytest.fixture(scope="session", autouse=True)
def _isolated_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Apps and `cds-service` processes the tests start keep their database in a temporary
    directory, never in the user's data directory or in a database named by the environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CDS_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        for name in ("CDS_DATABASE_URL", "CDS_ID_HASH_KEY", "CDS_UPGRADE_DB", "CDS_REPEAT_ON_SIGN"):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data directory (embedded database, spool, id-hash key) for each test, so no test
    sees another's audit trail (order-sign would stay silent about an order another test selected)."""
    path = tmp_path / "data"
    monkeypatch.setenv("CDS_DATA_DIR", str(path))
    return path


@pytest.fixture
def app() -> Iterator[Flask]:
    app = create_app({"base_url": "https://cds.example.org"})
    app.config["TESTING"] = True
    yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def service_request(
    id: str = "sr-1",
    *,
    system: str | None = CPT,
    code: str | None = None,
    display: str | None = None,
    text: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A realistic draft R4 ServiceRequest; pass ``code`` and/or ``text`` for what is ordered."""
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": id,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/pat-1"},
        "requester": {"reference": "Practitioner/prac-1"},
        "authoredOn": "2026-11-26",
    }
    concept: dict[str, Any] = {}
    if code is not None:
        coding: dict[str, Any] = {"code": code}
        if system is not None:
            coding["system"] = system
        if display is not None:
            coding["display"] = display
        concept["coding"] = [coding]
    if text is not None:
        concept["text"] = text
    if concept:
        resource["code"] = concept
    resource.update(extra)
    return resource


def hook_request(
    *orders: dict[str, Any],
    hook: str = "order-sign",
    selections: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    context: dict[str, Any] = {
        "userId": "Practitioner/prac-1",
        "patientId": "pat-1",
        "draftOrders": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": copy.deepcopy(o)} for o in orders],
        },
    }
    if selections is not None:
        context["selections"] = selections
    body: dict[str, Any] = {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": "https://ehr.example.org/fhir",
        "context": context,
    }
    body.update(extra)
    return body


def assert_valid_response(body: Any) -> None:
    """Validate against the CDS Hooks 2.0 response schema written from the spec."""
    jsonschema.validate(body, SCHEMA, format_checker=jsonschema.FormatChecker())


def sandbox_fixtures(kind: str | None = None) -> list[Path]:
    paths = sorted(SANDBOX_FIXTURES.glob("*.json"))
    paths = [p for p in paths if p.name != "sandbox-public-jwks.json"]
    if kind:
        paths = [p for p in paths if json.loads(p.read_text())["path"].endswith(kind)]
    return paths


@pytest.fixture
def post_hook(client: FlaskClient) -> Callable[..., Any]:
    def _post(path: str, body: Any) -> Any:
        response = client.post(path, json=body)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert_valid_response(response.json)
        return response.json

    return _post


@pytest.fixture(scope="session")
def make_httpserver() -> Iterator[HTTPServer]:
    """pytest-httpserver's FHIR stand-in, on 127.0.0.1 only; threaded, so a deliberately slow
    answer holds up no other request."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def patient_resource(id: str = "pat-1", state: str | None = "CA", **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": id, "name": [{"family": "Rivera", "given": ["Ana"]}]}
    if state is not None:
        resource["address"] = [{"use": "home", "city": "Fresno", "state": state, "postalCode": "93701"}]
    resource.update(extra)
    return resource


def coverage_resource(
    id: str = "cov-1", *, sopt: str | None = "511", status: str = "active", **extra: Any
) -> dict[str, Any]:
    """An R4 Coverage; SOPT 511 is Commercial Managed Care - HMO."""
    resource: dict[str, Any] = {
        "resourceType": "Coverage",
        "id": id,
        "status": status,
        "beneficiary": {"reference": "Patient/pat-1"},
        "payor": [{"display": "Health plan"}],
    }
    if sopt is not None:
        resource["type"] = {"coding": [{"system": SOPT, "code": sopt}]}
    resource.update(extra)
    return resource


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on loopback for this test session. Outside CI, tests that need it
    skip when the server programs are not installed; in CI (CI=true) they fail instead."""
    bindir = find_bindir()
    if bindir is None:
        reason = "PostgreSQL server programs not found: install Debian's postgresql package or set CDS_TEST_PG_BINDIR"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = PostgresServer(bindir)
    server.start()
    yield server
    server.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind the service supports, for the same test on both."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite3'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = f"cds_{uuid.uuid4().hex[:12]}"
    yield server.create_database(name)
    server.drop_database(name)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`cds-service serve` with its defaults (as the examples were recorded), shared across modules."""
    directory = tmp_path_factory.mktemp("live-server")
    env = {"CDS_PAYER_NAME": "Health plan", "CDS_DATA_DIR": str(directory / "data")}
    with running_server(directory / "serve.log", env=env) as server:
        yield server.url
