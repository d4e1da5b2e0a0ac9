"""CDS Hooks client JWT authentication with real keys, real tokens and a real JWKS server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds_service import create_app
from cds_service.auth import TrustedClientsError, load_trusted_clients
from tests.conftest import ROOT, SANDBOX_FIXTURES, SIGN, hook_request, service_request

BASE = "https://cds.example.org"
AUD = BASE + SIGN
ISS = "https://ehr.example.org"
SANDBOX_ISS = "https://sandbox.cds-hooks.org"
SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
BODY = hook_request(service_request(code="0600T"))
FEEDBACK = {"feedback": [{"card": "c-1", "outcome": "overridden", "outcomeTimestamp": "2026-11-26T10:00:00Z"}]}


class Key:
    """A generated private key and its public JWK."""

    def __init__(self, kind: str, kid: str) -> None:
        self.kid = kid
        if kind == "EC":
            self.private = ec.generate_private_key(ec.SECP384R1())
            self.alg = "ES384"
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.alg = "RS384"
        algorithm = jwt.algorithms.ECAlgorithm if kind == "EC" else jwt.algorithms.RSAAlgorithm
        self.jwk = {
            **json.loads(algorithm.to_jwk(self.private.public_key())),
            "kid": kid,
            "alg": self.alg,
            "use": "sig",
        }
        self.public_pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(self, *, headers: dict[str, Any] | None = None, alg: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISS, "aud": AUD, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        header = {"kid": self.kid, "typ": "JWT", **(headers or {})}
        return jwt.encode(payload, self.private, algorithm=alg or self.alg, headers=header)


@pytest.fixture(scope="module")
def ec_key() -> Key:
    return Key("EC", "ec-1")


@pytest.fixture(scope="module")
def rsa_key() -> Key:
    return Key("RSA", "rsa-1")


def write_clients(path: Path, clients: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"clients": clients}))
    return path


@pytest.fixture
def client_for(tmp_path):
    def make(clients: list[dict[str, Any]], **settings: Any):
        app = create_app(
            {"base_url": BASE, "trusted_clients": write_clients(tmp_path / "clients.yaml", clients), **settings}
        )
        return app.test_client()

    return make


@pytest.fixture
def secured(client_for, ec_key, rsa_key):
    return client_for([{"iss": ISS, "jwks": {"keys": [ec_key.jwk, rsa_key.jwk]}, "tenant": None}])


def call(client, token: str | None, path: str = SIGN, body: Any = BODY, scheme: str = "Bearer"):
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    return client.post(path, json=body, headers=headers)


def assert_401(response, words: str) -> None:
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    outcome = response.json
    assert outcome["resourceType"] == "OperationOutcome"
    assert words in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize("key", ["ec_key", "rsa_key"])
def test_valid_es384_and_rs384_tokens_pass(secured, key, request):
    signer: Key = request.getfixturevalue(key)
    response = call(secured, signer.token())
    assert response.status_code == 200
    assert len(response.json["cards"]) == 1


def test_aud_as_a_one_element_array(secured, ec_key):
    assert call(secured, ec_key.token(aud=[AUD])).status_code == 200


@pytest.mark.parametrize("aud", [f"{AUD}/feedback", AUD])
def test_feedback_accepts_the_feedback_url_or_the_service_url(secured, ec_key, aud):
    assert call(secured, ec_key.token(aud=aud), f"{SIGN}/feedback", FEEDBACK).status_code == 200


def test_discovery_and_evidence_stay_open(secured):
    assert secured.get("/cds-services").status_code == 200
    assert secured.get("/evidence/SURG.00126").status_code == 200


def _hs256_with_public_key(signer: Key) -> str:
    """The classic key-confusion forgery: HMAC-SHA256 keyed with the public key PEM."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": signer.kid}).encode())
    payload = b64(json.dumps({"iss": ISS, "aud": AUD, "iat": now, "exp": now + 60, "jti": "x"}).encode())
    signature = hmac.new(signer.public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def _none_token() -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISS, "aud": AUD, "iat": now, "exp": now + 60, "jti": "n"}, None, algorithm="none")


REFUSALS = [
    ("no-header", lambda k, o: None, "missing bearer token"),
    ("basic-scheme", lambda k, o: ("Basic", "dXNlcjpwYXNz"), "malformed"),
    ("empty-bearer", lambda k, o: ("Bearer", ""), "malformed"),
    ("not-a-jwt", lambda k, o: "not.a.jwt", "malformed"),
    ("garbage", lambda k, o: "abc", "malformed"),
    ("alg-none", lambda k, o: _none_token(), "algorithm"),
    ("hs256-public-key", lambda k, o: _hs256_with_public_key(k), "algorithm"),
    ("wrong-key-same-kid", lambda k, o: o.token(headers={"kid": k.kid}), "signature"),
    ("unknown-kid", lambda k, o: o.token(), "no key with this kid"),
    ("no-kid", lambda k, o: jwt.encode({"iss": ISS, "aud": AUD}, k.private, algorithm="ES384"), "kid"),
    ("unknown-iss", lambda k, o: k.token(iss="https://evil.example"), "issuer"),
    ("expired", lambda k, o: k.token(iat=int(time.time()) - 400, exp=int(time.time()) - 100), "expired"),
    ("iat-in-future", lambda k, o: k.token(iat=int(time.time()) + 600, exp=int(time.time()) + 800), "future"),
    ("lifetime-too-long", lambda k, o: k.token(exp=int(time.time()) + 3600), "lifetime"),
    ("wrong-aud", lambda k, o: k.token(aud=BASE + "/cds-services/other"), "aud"),
    ("aud-of-discovery", lambda k, o: k.token(aud=BASE + "/cds-services"), "aud"),
    ("missing-jti", lambda k, o: k.token(jti=None), "required claim"),
    ("missing-exp", lambda k, o: k.token(exp=None), "required claim"),
    ("missing-iat", lambda k, o: k.token(iat=None), "required claim"),
    ("missing-aud", lambda k, o: k.token(aud=None), "required claim"),
    ("jku-off-allow-list", lambda k, o: k.token(headers={"jku": "https://evil.example/jwks.json"}), "jku"),
    ("es256-not-allowed", lambda k, o: jwt.encode({"iss": ISS}, ec.generate_private_key(ec.SECP256R1()),
                                                   algorithm="ES256", headers={"kid": k.kid}), "algorithm"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "words"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refused_tokens_get_401(secured, ec_key, make, words):
    other = Key("EC", "other-kid")
    made = make(ec_key, other)
    if isinstance(made, tuple):
        scheme, token = made
        response = call(secured, token, scheme=scheme)
    else:
        response = call(secured, made)
    assert_401(response, words)
    assert call(secured, ec_key.token()).status_code == 200  # and the server keeps serving


def test_a_known_kid_naming_another_key_is_refused(secured, ec_key, rsa_key):
    # An ES384 token whose kid names the client's RSA key: the key and the algorithm disagree.
    assert_401(call(secured, ec_key.token(headers={"kid": rsa_key.kid})), "")
    assert_401(call(secured, Key("EC", "ec-1").token()), "signature")  # a stranger's key under a known kid


def test_replayed_jti_is_refused(secured, ec_key):
    token = ec_key.token()
    assert call(secured, token).status_code == 200
    assert_401(call(secured, token), "already used")
    # The same jti from the same issuer in a fresh token is still a replay.
    jti = str(uuid.uuid4())
    assert call(secured, ec_key.token(jti=jti)).status_code == 200
    assert_401(call(secured, ec_key.token(jti=jti)), "already used")


def test_tenant_is_checked_when_configured(client_for, ec_key):
    client = client_for([{"iss": ISS, "jwks": {"keys": [ec_key.jwk]}, "tenant": "hospital-a"}])
    assert call(client, ec_key.token(tenant="hospital-a")).status_code == 200
    assert_401(call(client, ec_key.token(tenant="hospital-b")), "tenant")
    assert_401(call(client, ec_key.token()), "tenant")


def test_sandbox_token_shape(client_for):
    """ES384, the sandbox's kid, a jku header, iss https://sandbox.cds-hooks.org, and no sub."""
    recorded = json.loads(
        (SANDBOX_FIXTURES / "pama-mri-lumbar-full-run--06-order-sign-pama-order-sign.json").read_text()
    )
    assert set(recorded["jwt_claims"]) == {"iss", "aud", "exp", "iat", "jti"}
    signer = Key("EC", SANDBOX_KID)
    client = client_for([{"iss": SANDBOX_ISS, "jwks": {"keys": [signer.jwk]}, "jku": [SANDBOX_JKU]}])
    token = signer.token(headers={**recorded["jwt_header"]}, iss=SANDBOX_ISS)
    assert jwt.get_unverified_header(token) == recorded["jwt_header"]
    response = call(client, token, body=recorded["body"])
    assert response.status_code == 200, response.get_data(as_text=True)


def test_readme_sandbox_clients_file_is_the_real_sandbox_key(tmp_path):
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, flags=re.S)
    (block,) = [b for b in blocks if SANDBOX_ISS in b]
    path = tmp_path / "sandbox.yaml"
    path.write_text(block)
    (client,) = load_trusted_clients(path).clients
    assert (client.iss, client.jku) == (SANDBOX_ISS, (SANDBOX_JKU,))
    assert client.jwks == json.loads((SANDBOX_FIXTURES / "sandbox-public-jwks.json").read_text())


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("clients: []", "clients"),
        ("clients: [{iss: https://a}]", "jwks"),
        ("clients: [{iss: https://a, jwks: {keys: [{kty: EC}]}}]", "JWK set"),
        ("clients: [{iss: https://a, jwks_url: https://a/k, algorithms: [HS256]}]", "symmetric"),
        ("clients: [{iss: https://a, jwks_url: https://a/k, algorithms: [none]}]", "none"),
        ("clients: [{iss: https://a, jwks_url: ftp://a/k}]", "http"),
        ("clients: [{iss: https://a, jwks_url: https://a/k}, {iss: https://a, jwks_url: https://a/j}]", "twice"),
        ("clients: [{iss: https://a, jwks_url: https://a/k, colour: red}]", "colour"),
        ("{not yaml", "not valid"),
    ],
)
def test_broken_trusted_clients_file_names_the_problem(tmp_path, content, words):
    path = tmp_path / "clients.yaml"
    path.write_text(content)
    with pytest.raises(TrustedClientsError) as raised:
        load_trusted_clients(path)
    assert str(path) in str(raised.value) and words in str(raised.value)


def test_json_trusted_clients_file(tmp_path, ec_key):
    path = tmp_path / "clients.json"
    path.write_text(json.dumps({"clients": [{"iss": ISS, "jwks": {"keys": [ec_key.jwk]}}]}))
    client = create_app({"base_url": BASE, "trusted_clients": path}).test_client()
    assert call(client, ec_key.token()).status_code == 200


class JwksServer:
    """A real HTTP server on loopback publishing a JWK set that tests can rotate or take down."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


def test_jwks_url_fetch_cache_and_rotation(client_for, jwks_server):
    old, new = Key("EC", "k-old"), Key("EC", "k-new")
    jwks_server.keys = [old.jwk]
    client = client_for([{"iss": ISS, "jwks_url": jwks_server.url}], jwks_min_refetch_s=0)
    assert call(client, old.token()).status_code == 200
    assert call(client, old.token()).status_code == 200
    assert jwks_server.requests == 1  # cached
    jwks_server.keys = [old.jwk, new.jwk]  # the EHR rotates its key
    assert call(client, new.token()).status_code == 200
    assert jwks_server.requests == 2  # an unknown kid triggered one refetch


def test_unknown_kids_cannot_hammer_the_key_server(client_for, jwks_server):
    good = Key("EC", "good")
    jwks_server.keys = [good.jwk]
    client = client_for([{"iss": ISS, "jwks_url": jwks_server.url}], jwks_min_refetch_s=60)
    assert call(client, good.token()).status_code == 200
    for i in range(20):
        assert_401(call(client, Key("EC", f"made-up-{i}").token()), "no key with this kid")
    assert jwks_server.requests == 1


def test_allowed_jku_is_fetched(client_for, jwks_server):
    signer = Key("EC", "jku-key")
    jwks_server.keys = [signer.jwk]
    client = client_for([{"iss": ISS, "jku": [jwks_server.url]}])
    assert call(client, signer.token(headers={"jku": jwks_server.url})).status_code == 200
    assert_401(call(client, signer.token()), "jku")  # a jku-only client must name its set


def test_key_server_down_is_401_not_500(client_for, jwks_server):
    signer = Key("EC", "k")
    url = jwks_server.url
    jwks_server.stop()
    client = client_for([{"iss": ISS, "jwks_url": url}], jwks_timeout_s=1)
    assert_401(call(client, signer.token()), "could not be fetched")


def test_key_server_garbage_is_401(client_for, jwks_server):
    jwks_server.keys = [{"kty": "nonsense"}]
    client = client_for([{"iss": ISS, "jwks_url": jwks_server.url}])
    assert_401(call(client, Key("EC", "k").token()), "could not be fetched")


def test_no_token_reaches_the_log(secured, ec_key, caplog, capfd):
    caplog.set_level("DEBUG")
    good, replay, bad = ec_key.token(), None, Key("EC", "ec-1").token()
    for token in (good, good, bad, ec_key.token(aud="https://elsewhere"), _hs256_with_public_key(ec_key)):
        call(secured, token)
        replay = token
    access_token = "eyFHIR-ACCESS-TOKEN-secret"
    body = hook_request(
        service_request(code="0600T"),
        fhirAuthorization={"access_token": access_token, "token_type": "Bearer", "expires_in": 300,
                           "scope": "patient/*.read", "subject": "cds"},
    )  # fmt: skip
    call(secured, ec_key.token(), body=body)
    logged = caplog.text + "".join(capfd.readouterr())
    assert "401" in logged and "signature" in logged
    for secret in (good, bad, replay, access_token):
        assert secret not in logged
        assert secret.split(".")[-1] not in logged


class TestAudienceBehindProxies:
    def test_forwarded_headers_ignored_unless_trusted(self, tmp_path, ec_key):
        path = write_clients(tmp_path / "c.yaml", [{"iss": ISS, "jwks": {"keys": [ec_key.jwk]}}])
        client = create_app({"trusted_clients": path}).test_client()
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example"}
        token = ec_key.token(aud="https://public.example" + SIGN)
        response = client.post(SIGN, json=BODY, headers={"Authorization": f"Bearer {token}", **forwarded})
        assert_401(response, "aud")
        token = ec_key.token(aud="http://localhost" + SIGN)
        assert (
            client.post(SIGN, json=BODY, headers={"Authorization": f"Bearer {token}", **forwarded}).status_code == 200
        )

    def test_forwarded_headers_used_when_trusted(self, tmp_path, ec_key):
        path = write_clients(tmp_path / "c.yaml", [{"iss": ISS, "jwks": {"keys": [ec_key.jwk]}}])
        client = create_app({"trusted_clients": path, "trusted_proxies": 1}).test_client()
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example"}
        token = ec_key.token(aud="https://public.example" + SIGN)
        assert (
            client.post(SIGN, json=BODY, headers={"Authorization": f"Bearer {token}", **forwarded}).status_code == 200
        )


def test_open_service_warns_loudly(caplog):
    caplog.set_level("WARNING")
    create_app({})
    assert "AUTHENTICATION IS OFF" in caplog.text


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "cds.example.org"])
def test_serve_refuses_an_open_service_off_loopback(host, capsys):
    from cds_service.cli import main  # noqa: PLC0415

    assert main(["serve", "--host", host]) == 2
    assert "--allow-anonymous" in capsys.readouterr().err


def test_serve_reports_a_broken_trusted_clients_file(tmp_path, capsys):
    from cds_service.cli import main  # noqa: PLC0415

    path = tmp_path / "clients.yaml"
    path.write_text("clients: [{iss: https://a}]")
    assert main(["serve", "--trusted-clients", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "jwks" in err


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.9", "localhost", "::1", "[::1]"])
def test_loopback_hosts(host):
    from cds_service.cli import _is_loopback  # noqa: PLC0415

    assert _is_loopback(host)


def test_the_audit_trail_records_the_verified_issuer(client_for, ec_key):
    from sqlalchemy import select  # noqa: PLC0415

    from cds_service.storage.tables import hook_calls  # noqa: PLC0415

    client = client_for([{"iss": ISS, "jwks": {"keys": [ec_key.jwk]}}])
    assert call(client, ec_key.token()).status_code == 200
    store = client.application.extensions["cds_store"]
    assert store.flush(10)
    with store.connect() as connection:
        assert connection.execute(select(hook_calls.c.client)).scalars().all() == [ISS]
