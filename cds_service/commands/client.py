"""Calling a running deployment as a CDS client would: ``demo`` and ``selfcheck`` share this.

With ``--private-key`` every call carries ``Authorization: Bearer <JWT>`` signed the way CDS Hooks
2.0 "Trusting CDS Clients" asks: header ``alg`` (ES384 for a P-384 key, RS384 for an RSA key: the
two the spec RECOMMENDS), ``kid`` and ``typ: JWT`` (plus ``jku`` if given); claims ``iss``,
``aud`` = the exact URL being called, ``iat``, ``exp`` = ``iat`` + 300 s (what the reference sandbox
and Inferno mint) and a fresh ``jti``. Tokens are never printed.
"""

from __future__ import annotations

import argparse
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds_service.commands.common import CommandError

TOKEN_LIFETIME_S = 300
MIN_RSA_BITS = 2048


@dataclass(frozen=True, slots=True)
class Signer:
    """Mints one CDS Hooks client JWT per call."""

    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    algorithm: str
    kid: str
    iss: str
    jku: str | None = None

    @classmethod
    def from_pem(cls, path: Path, kid: str, iss: str, jku: str | None = None) -> Signer:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise CommandError(f"{path}: not an unencrypted PEM private key: {exc}") from None
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
            return cls(key, "ES384", kid, iss, jku)
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= MIN_RSA_BITS:
            return cls(key, "RS384", kid, iss, jku)
        raise CommandError(f"{path}: expected an EC P-384 key (ES384) or an RSA key of 2048 bits or more (RS384)")

    def token(self, audience: str, *, issued_at: float | None = None, lifetime: float = TOKEN_LIFETIME_S) -> str:
        iat = int(time.time() if issued_at is None else issued_at)
        claims = {"iss": self.iss, "aud": audience, "iat": iat, "exp": iat + int(lifetime), "jti": str(uuid.uuid4())}
        headers: dict[str, Any] = {"kid": self.kid, "typ": "JWT"}
        if self.jku:
            headers["jku"] = self.jku
        return jwt.encode(claims, self.key, algorithm=self.algorithm, headers=headers)


class Client:
    """A deployment at ``base`` (the part before ``/cds-services``)."""

    def __init__(self, base: str, signer: Signer | None, timeout: float) -> None:
        self.base = base
        self.signer = signer
        self.timeout = timeout
        self.session = requests.Session()

    def url(self, path: str) -> str:
        return self.base + path

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        sign: bool = True,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """One HTTP call, signed for its own URL unless ``sign`` is false or a ``token`` is given."""
        headers = {"Accept": "application/json", **(headers or {})}
        if token is None and sign and self.signer is not None:
            token = self.signer.token(self.url(path))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        url = self.url(path)
        try:
            return self.session.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
        except requests.Timeout:
            raise CommandError(f"{method} {url}: no answer within {self.timeout:g} s") from None
        except requests.ConnectionError:
            raise CommandError(f"{method} {url}: cannot connect; is the service running at {self.base}?") from None
        except requests.RequestException as exc:
            raise CommandError(f"{method} {url}: {exc}") from None


def describe_status(response: requests.Response) -> str:
    """The status; for an error, also the OperationOutcome's diagnostics or the start of the body."""
    if response.ok:
        return str(response.status_code)
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code}: {response.text[:200]!r}"
    issues = body.get("issue") if isinstance(body, dict) else None
    if isinstance(issues, list) and issues and isinstance(issues[0], dict):
        return f"{response.status_code}: {issues[0].get('diagnostics', '')}"
    return f"{response.status_code}: {str(body)[:200]}"


def add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        required=True,
        help="the deployment's base URL; discovery is URL/cds-services (e.g. http://127.0.0.1:8080)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer (default: 10)")
    auth = parser.add_argument_group("client authentication (CDS Hooks JWT; all three or none)")
    auth.add_argument("--private-key", type=Path, metavar="PEM", help="EC P-384 (ES384) or RSA (RS384) private key")
    auth.add_argument("--kid", help="key id, as in the client's JWK set")
    auth.add_argument("--iss", help="issuer, as in the deployment's trusted clients")
    auth.add_argument("--jku", help="optional jku header: the URL of the client's JWK set")


def client_from_args(args: argparse.Namespace) -> Client:
    base = args.url.strip().rstrip("/").removesuffix("/cds-services")
    if not base.startswith(("http://", "https://")):
        raise CommandError(f"--url must be an absolute http(s) URL, not {args.url!r}")
    signer = None
    if args.private_key or args.kid or args.iss:
        if not (args.private_key and args.kid and args.iss):
            raise CommandError("--private-key, --kid and --iss go together: a CDS Hooks JWT needs all three")
        signer = Signer.from_pem(args.private_key, args.kid, args.iss, args.jku)
    return Client(base, signer, args.timeout)
