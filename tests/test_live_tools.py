"""`demo` and `selfcheck` against real servers on loopback: ours (open and with JWT auth) and a broken one."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds_service.cli import main
from cds_service.commands.client import Signer
from cds_service.examples import load_examples
from tests.servers import running_server

pytestmark = pytest.mark.e2e
EXAMPLES = load_examples()
EHR = "https://ehr.example.org"


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def selfcheck(capsys, url: str, *options: str) -> tuple[int, list[dict]]:
    code, out, err = run(capsys, "selfcheck", "--url", url, "--json", *options)
    assert not err
    return code, json.loads(out)


def outcomes(rows: list[dict], section: str) -> dict[str, str]:
    return {row["check"]: row["outcome"] for row in rows if row["section"] == section}


class Key:
    """A generated client key, written as PEM, with its public JWK."""

    def __init__(self, directory: Path, kind: str, kid: str) -> None:
        self.kid = kid
        if kind == "EC":
            self.private = ec.generate_private_key(ec.SECP384R1())
            algorithm, alg = jwt.algorithms.ECAlgorithm, "ES384"
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            algorithm, alg = jwt.algorithms.RSAAlgorithm, "RS384"
        self.jwk = {**json.loads(algorithm.to_jwk(self.private.public_key())), "kid": kid, "alg": alg}
        self.pem = directory / f"{kid}.pem"
        self.pem.write_bytes(
            self.private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    def options(self, iss: str = EHR) -> list[str]:
        return ["--private-key", str(self.pem), "--kid", self.kid, "--iss", iss]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Key]:
    directory = tmp_path_factory.mktemp("keys")
    return {"EC": Key(directory, "EC", "ec-1"), "RSA": Key(directory, "RSA", "rsa-1")}


@pytest.fixture(scope="module")
def auth_server(keys, tmp_path_factory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("auth")
    trusted = directory / "trusted-clients.json"
    jwks = {"keys": [key.jwk for key in keys.values()]}
    trusted.write_text(json.dumps({"clients": [{"iss": EHR, "jwks": jwks}]}))
    env = {"CDS_DATA_DIR": str(directory / "data")}
    with running_server(directory / "serve.log", "--trusted-clients", str(trusted), env=env) as server:
        yield server.url


def test_demo_against_a_running_server(capsys, live_server):
    code, out, err = run(capsys, "demo", "--url", live_server)
    assert code == 0, err
    table = out[out.index("What came back") :]
    for example in EXAMPLES:
        row = next(line for line in table.splitlines() if f" {example.name} " in line)
        assert " 200 " in row and row.rstrip(" │").endswith("yes"), row
    assert "Remove the order: Pulmonary vein isolation by pulsed field ablation (PFA)" in out


def test_demo_reports_refused_calls_and_unreachable_servers(capsys, auth_server):
    code, out, _ = run(capsys, "demo", "--url", auth_server)
    assert code == 1 and "401: missing bearer token" in out
    code, _, err = run(capsys, "demo", "--url", "http://127.0.0.1:9")
    assert code == 2 and "cannot connect" in err


def test_selfcheck_passes_an_open_deployment(capsys, live_server):
    code, rows = selfcheck(capsys, live_server + "/cds-services/")
    assert code == 0, [row for row in rows if row["outcome"] == "FAIL"]
    assert {row["outcome"] for row in rows} == {"pass", "warn", "skip"}
    assert outcomes(rows, "Authentication") == {"unsigned hook call is refused": "warn", "signed calls": "skip"}
    cards = outcomes(rows, "Cards")
    assert cards["summary present and under 140 characters"] == "pass"
    assert cards["links well formed, at least one absolute link"] == "pass"
    assert set(cards.values()) == {"pass"} and len(cards) == 13
    errors = outcomes(rows, "Errors")
    assert errors == {
        "malformed JSON → 400 OperationOutcome": "pass",
        "request without context → 400 OperationOutcome": "pass",
        "unknown service → 404 OperationOutcome": "pass",
        "GET on a hook endpoint → 405 OperationOutcome": "pass",
        "body over 5242880 bytes → 413 OperationOutcome": "pass",
    }
    assert len(outcomes(rows, "Hook calls")) == len(EXAMPLES) + 1
    assert len(outcomes(rows, "CORS")) == 4
    assert outcomes(rows, "Feedback") == {"override with a reason and an acceptance answered 200": "pass"}


def test_selfcheck_signs_every_call_and_checks_tokens(capsys, auth_server, keys):
    code, rows = selfcheck(capsys, auth_server, *keys["EC"].options())
    assert code == 0, [row for row in rows if row["outcome"] != "pass"]
    assert outcomes(rows, "Authentication") == {
        "unsigned hook call is refused": "pass",
        f"signed hook call (ES384, kid ec-1, iss {EHR})": "pass",
        "signed discovery call": "pass",
        "expired token → 401": "pass",
        "token for another URL (aud) → 401": "pass",
        "the first token again (jti replay) → 401": "pass",
        "unsigned token (alg none) → 401": "pass",
    }
    code, rows = selfcheck(capsys, auth_server, *keys["RSA"].options())
    assert code == 0
    assert outcomes(rows, "Authentication")[f"signed hook call (RS384, kid rsa-1, iss {EHR})"] == "pass"


def test_selfcheck_without_a_key_fails_on_an_authenticating_deployment(capsys, auth_server, keys):
    code, rows = selfcheck(capsys, auth_server)
    assert code == 1
    hook_calls = [row for row in rows if row["section"] == "Hook calls"]
    assert {row["outcome"] for row in hook_calls} == {"FAIL"}
    assert "401" in hook_calls[0]["detail"] and "unsigned" in hook_calls[0]["detail"]
    code, rows = selfcheck(capsys, auth_server, *keys["EC"].options(iss="https://stranger.example.org"))
    assert code == 1
    assert "401: issuer is not a trusted client" in next(
        r["detail"] for r in rows if r["check"].startswith("signed hook")
    )


def test_tokens_carry_the_cds_hooks_claims(keys):
    for kind, alg in (("EC", "ES384"), ("RSA", "RS384")):
        key = keys[kind]
        signer = Signer.from_pem(key.pem, key.kid, EHR, jku="https://ehr.example.org/jwks.json")
        url = "http://127.0.0.1:8080/cds-services/medical-policy-order-sign"
        first, second = signer.token(url), signer.token(url)
        header = jwt.get_unverified_header(first)
        assert header == {"alg": alg, "kid": key.kid, "typ": "JWT", "jku": "https://ehr.example.org/jwks.json"}
        claims = jwt.decode(first, key.private.public_key(), algorithms=[alg], audience=url, issuer=EHR)
        assert claims["exp"] - claims["iat"] == 300
        assert claims["jti"] != jwt.decode(second, options={"verify_signature": False})["jti"]
        assert "sub" not in claims


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--kid", "k"], "go together"),
        (["--private-key", "/nonexistent.pem", "--kid", "k", "--iss", EHR], "not an unencrypted PEM private key"),
    ],
)
def test_selfcheck_usage_errors(capsys, options, words):
    code, out, err = run(capsys, "selfcheck", "--url", "http://127.0.0.1:9", *options)
    assert code == 2 and words in err and not out


def test_a_p256_key_is_refused(capsys, tmp_path):
    pem = tmp_path / "p256.pem"
    pem.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    code, _, err = run(
        capsys, "demo", "--url", "http://127.0.0.1:9", "--private-key", str(pem), "--kid", "k", "--iss", EHR
    )
    assert code == 2 and "EC P-384 key (ES384) or an RSA key" in err


BROKEN_CARD = {
    "summary": "x" * 150,
    "indicator": "warning",
    "source": {"label": "Plan"},
    "detail": None,
    "suggestions": [{"label": "Remove"}],
}


class BrokenService(BaseHTTPRequestHandler):
    """A deployment that gets most things wrong: the selfcheck must say so."""

    def _send(self, status: int, body: object, content_type: str = "application/json") -> None:
        data = (json.dumps(body) if content_type == "application/json" else str(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/cds-services":
            services = [{"hook": "order-sign", "id": "svc"}, {"hook": "order-select", "id": "svc", "description": "d"}]
            self._send(200, {"services": services})
        else:
            self._send(404, "<html>not found</html>", "text/html")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.endswith("/feedback"):
            self._send(500, "<html>error</html>", "text/html")
        else:
            self._send(200, {"cards": [BROKEN_CARD]})

    def do_OPTIONS(self) -> None:
        self._send(204, "", "text/plain")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def broken_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BrokenService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_selfcheck_fails_a_broken_deployment(capsys, broken_server):
    code, rows = selfcheck(capsys, broken_server, "--max-body-bytes", "1000")
    assert code == 1
    failed = {(row["section"], row["check"]) for row in rows if row["outcome"] == "FAIL"}
    for expected in [
        ("Discovery", "every service has hook, id and description"),
        ("Discovery", "service ids are unique"),
        ("Hook calls", "order-sign-not-ire → order-sign service"),  # a card where none was expected
        ("Cards", "summary present and under 140 characters"),
        ("Cards", "no nulls, empty strings, empty arrays or empty objects"),
        ("Cards", "source.topic set (Da Vinci CRD resp-5)"),
        ("Cards", "every card has a uuid (needed for feedback)"),
        ("Cards", "links well formed, at least one absolute link"),
        ("Cards", "selectionBehavior given with suggestions"),
        ("Cards", "suggestions have a label and a uuid (CRD resp-3)"),
        ("CORS", "answers carry Access-Control-Allow-Origin"),
        ("Errors", "malformed JSON → 400 OperationOutcome"),
        ("Errors", "GET on a hook endpoint → 405 OperationOutcome"),
        ("Errors", "body over 1000 bytes → 413 OperationOutcome"),
    ]:
        assert expected in failed, expected
    assert any(section == "CORS" and check.startswith("preflight") for section, check in failed)
    assert outcomes(rows, "Feedback") == {"feedback": "skip"}  # no card has a uuid
    detail = next(r["detail"] for r in rows if r["check"] == "summary present and under 140 characters")
    assert "cards[0].summary: 150 characters; must be under 140" in detail


def test_table_rendering(capsys, broken_server):
    code, out, _ = run(capsys, "selfcheck", "--url", broken_server, "--max-body-bytes", "1000")
    assert code == 1
    assert "CDS Hooks self-check of" in out and "FAIL" in out and "Discovery" in out
    assert out.strip().splitlines()[-1].startswith(tuple("0123456789")) and " fail" in out.splitlines()[-1]
