"""CDS Hooks client authentication: JWT bearer tokens checked against trusted clients.

Flask-free. CDS Hooks 2.0 "Trusting CDS Clients" says what a token must carry and how it is signed;
the checks below follow it, with the best-practice recipe (iss allow-list, aud = the endpoint URL,
exp, signature by kid, jti never reused) and these choices:

- Algorithms: ES384 and RS384 (RECOMMENDED by the spec); a client may list others it uses, but
  ``none`` and every symmetric (HMAC) algorithm are refused ("SHALL NOT"), so a public key can
  never be used as an HMAC secret.
- ``kid`` is REQUIRED in the header and picks the key. A ``jku`` header is honoured only when it is
  on that client's allow-list; otherwise the client's configured key set is used.
- ``sub`` is not required: the spec removed it from the claims in 2018, and the reference sandbox
  sends none. ``tenant`` is checked only when the client entry names one.
- ``exp`` is REQUIRED and may lie at most ``max_lifetime`` after ``iat`` (the spec sets no limit;
  clients mint 5-minute tokens in practice), ``iat`` may not be in the future beyond ``leeway``.
- ``jti`` is claimed in a :class:`ReplayCache` shared by every worker, and kept until the token
  could no longer be valid anyway.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Protocol

import jwt
import requests
import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from cds_service.policy import describe_validation_error

log = logging.getLogger(__name__)

DEFAULT_ALGORITHMS = ("ES384", "RS384")
# Asymmetric JWS algorithms PyJWT verifies; a client may opt into these in addition to the defaults.
PERMITTED_ALGORITHMS = frozenset({"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class AuthFailure(StrEnum):
    """Why a call was refused. Safe to show the caller: names the rule, never key material."""

    MISSING = "missing bearer token"
    MALFORMED = "malformed token"
    UNKNOWN_ISSUER = "issuer is not a trusted client"
    ALGORITHM = "signing algorithm not allowed"
    MISSING_KID = "token header has no kid"
    JKU_NOT_ALLOWED = "jku is not on the client's allow-list"
    UNKNOWN_KID = "no key with this kid in the client's key set"
    KEYS_UNAVAILABLE = "the client's key set could not be fetched"
    SIGNATURE = "signature does not verify"
    EXPIRED = "token has expired"
    LIFETIME = "token lifetime exceeds the allowed maximum"
    NOT_YET_VALID = "token is issued in the future"
    AUDIENCE = "aud is not the URL that was called"
    MISSING_CLAIM = "a required claim is missing"
    TENANT = "tenant is not allowed for this client"
    REPLAYED = "jti was already used"


class AuthError(Exception):
    def __init__(self, failure: AuthFailure, detail: str = "") -> None:
        super().__init__(failure.value)
        self.failure = failure
        self.detail = detail  # for the log only


class TrustedClient(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    iss: NonEmpty
    jwks: dict[str, Any] | None = None
    jwks_url: NonEmpty | None = None
    jku: tuple[NonEmpty, ...] = ()
    tenant: NonEmpty | None = None
    algorithms: tuple[NonEmpty, ...] = DEFAULT_ALGORITHMS

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        refused = [alg for alg in value if alg not in PERMITTED_ALGORITHMS]
        if refused:
            raise ValueError(
                f"algorithms {refused} not allowed: CDS Hooks forbids 'none' and symmetric algorithms; "
                f"choose from {sorted(PERMITTED_ALGORITHMS)}"
            )
        return value

    @field_validator("jwks")
    @classmethod
    def _parses_as_jwk_set(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                jwt.PyJWKSet.from_dict(value)
            except jwt.PyJWTError as exc:
                raise ValueError(f"not a usable JWK set: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> TrustedClient:
        if self.jwks is None and self.jwks_url is None and not self.jku:
            raise ValueError("give one of jwks, jwks_url or a jku allow-list")
        if self.jwks is not None and self.jwks_url is not None:
            raise ValueError("give either jwks or jwks_url, not both")
        for url in (self.jwks_url, *self.jku):
            if url is not None and not url.startswith(("https://", "http://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return self


class TrustedClients(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    clients: tuple[TrustedClient, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_issuers(self) -> TrustedClients:
        seen = [c.iss for c in self.clients]
        duplicates = sorted({iss for iss in seen if seen.count(iss) > 1})
        if duplicates:
            raise ValueError(f"issuer listed twice: {', '.join(duplicates)}")
        return self


class TrustedClientsError(Exception):
    """The trusted-clients file cannot be used; the message names the file and the field."""


def load_trusted_clients(path: Path) -> TrustedClients:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    except (OSError, UnicodeDecodeError) as exc:
        raise TrustedClientsError(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise TrustedClientsError(f"{path}: not valid YAML or JSON: {exc}") from exc
    try:
        return TrustedClients.model_validate(raw)
    except ValidationError as exc:
        raise TrustedClientsError(f"{path}: {describe_validation_error(exc)}") from exc


class ReplayCache(Protocol):
    def claim(self, issuer: str, jti: str, expires_at: float) -> bool:
        """Record ``jti``; False if it was already recorded and has not expired."""


class MemoryReplayCache:
    """One process only: for the CLI, tests, and a database outage. Servers share the database's."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._expiry: list[tuple[float, tuple[str, str]]] = []  # heap: earliest expiry first
        self._lock = threading.Lock()
        self._clock = clock

    def claim(self, issuer: str, jti: str, expires_at: float) -> bool:
        now = self._clock()
        key = (issuer, jti)
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                _, old = heapq.heappop(self._expiry)
                if self._seen.get(old, now + 1) <= now:
                    del self._seen[old]
            if key in self._seen:
                return False
            self._seen[key] = expires_at
            heapq.heappush(self._expiry, (expires_at, key))
            return True


@dataclass
class _KeySet:
    keys: dict[str, jwt.PyJWK]
    fetched_at: float


class JwksCache:
    """Key sets fetched from URLs: cached, refetched on an unknown kid at most once per ``min_refetch``.

    The floor on refetching stops a flood of made-up kids from turning into a flood of requests to
    the EHR's key endpoint. Fetches use short connect/read timeouts so a slow key server costs one
    bounded wait, then a 401, never a hung worker.
    """

    def __init__(
        self,
        *,
        timeout: float = 2.0,
        max_age: float = 3600.0,
        min_refetch: float = 30.0,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout = timeout
        self._max_age = max_age
        self._min_refetch = min_refetch
        self._session = session or requests.Session()
        self._clock = clock
        self._sets: dict[str, _KeySet] = {}
        self._attempted: dict[str, float] = {}
        self._lock = threading.Lock()

    def _fetch(self, url: str) -> _KeySet:
        self._attempted[url] = self._clock()
        try:
            response = self._session.get(url, timeout=self._timeout, headers={"Accept": "application/json"})
            response.raise_for_status()
            key_set = jwt.PyJWKSet.from_dict(response.json())
        except (requests.RequestException, ValueError, jwt.PyJWTError) as exc:
            raise AuthError(AuthFailure.KEYS_UNAVAILABLE, f"{url}: {type(exc).__name__}") from None
        keys = {k.key_id: k for k in key_set.keys if k.key_id}
        entry = _KeySet(keys, self._clock())
        self._sets[url] = entry
        return entry

    def key(self, url: str, kid: str) -> jwt.PyJWK:
        with self._lock:
            now = self._clock()
            entry = self._sets.get(url)
            if entry is None or now - entry.fetched_at > self._max_age:
                entry = self._fetch(url)
            elif kid not in entry.keys and now - self._attempted.get(url, 0.0) >= self._min_refetch:
                entry = self._fetch(url)  # key rotation: the client may have published a new key
            found = entry.keys.get(kid)
            if found is None:
                raise AuthError(AuthFailure.UNKNOWN_KID, f"kid {kid!r} at {url}")
            return found


@dataclass(frozen=True, slots=True)
class VerifiedClient:
    iss: str


class TokenVerifier:
    """Checks one bearer token; shared by all requests of a worker (holds no per-request state)."""

    def __init__(
        self,
        clients: TrustedClients,
        replay: ReplayCache,
        *,
        jwks: JwksCache | None = None,
        max_lifetime: float = 300.0,
        leeway: float = 30.0,
    ) -> None:
        self._clients = {c.iss: c for c in clients.clients}
        self._inline = {
            c.iss: {k.key_id: k for k in jwt.PyJWKSet.from_dict(c.jwks).keys if k.key_id}
            for c in clients.clients
            if c.jwks is not None
        }
        self._replay = replay
        self._jwks = jwks or JwksCache()
        self._max_lifetime = max_lifetime
        self._leeway = leeway

    def _key(self, client: TrustedClient, header: dict[str, Any]) -> jwt.PyJWK:
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError(AuthFailure.MISSING_KID)
        jku = header.get("jku")
        if jku is not None and jku not in client.jku:
            raise AuthError(AuthFailure.JKU_NOT_ALLOWED, f"jku {jku!r}")
        if client.jwks is None:
            # An allowed jku names the set to fetch; without one, the client's configured URL.
            url = jku if jku is not None else client.jwks_url
            if url is None:  # a jku-only client called without a jku
                raise AuthError(AuthFailure.JKU_NOT_ALLOWED, "no jku in the header")
            return self._jwks.key(url, kid)
        # An inline set is the out-of-band copy of the client's keys (also of the set at an allowed
        # jku: the sandbox's jku host is not reachable from every network).
        key = self._inline[client.iss].get(kid)
        if key is None:
            raise AuthError(AuthFailure.UNKNOWN_KID, f"kid {kid!r}")
        return key

    def verify(self, token: str, audiences: Sequence[str]) -> VerifiedClient:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError):
            raise AuthError(AuthFailure.MALFORMED) from None
        iss = unverified.get("iss")
        client = self._clients.get(iss) if isinstance(iss, str) else None
        if client is None:
            raise AuthError(AuthFailure.UNKNOWN_ISSUER, f"iss {iss!r}")
        alg = header.get("alg")
        if alg not in client.algorithms:
            raise AuthError(AuthFailure.ALGORITHM, f"alg {alg!r}")
        key = self._key(client, header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=list(audiences),
                issuer=client.iss,
                leeway=self._leeway,
                options={"require": ["iss", "aud", "exp", "iat", "jti"], "strict_aud": False},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(AuthFailure.MISSING_CLAIM, exc.claim) from None
        except jwt.ExpiredSignatureError:
            raise AuthError(AuthFailure.EXPIRED) from None
        except jwt.ImmatureSignatureError:
            raise AuthError(AuthFailure.NOT_YET_VALID) from None
        except jwt.InvalidAudienceError:
            raise AuthError(AuthFailure.AUDIENCE, f"expected one of {list(audiences)}") from None
        except jwt.InvalidSignatureError:
            raise AuthError(AuthFailure.SIGNATURE) from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise AuthError(AuthFailure.MALFORMED, type(exc).__name__) from None
        return self._check_claims(client, claims)

    def _check_claims(self, client: TrustedClient, claims: dict[str, Any]) -> VerifiedClient:
        exp, iat, jti = claims["exp"], claims["iat"], claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise AuthError(AuthFailure.MISSING_CLAIM, "jti")
        if float(exp) - float(iat) > self._max_lifetime:
            raise AuthError(AuthFailure.LIFETIME, f"{float(exp) - float(iat):.0f} s")
        tenant = claims.get("tenant")
        if client.tenant is not None and tenant != client.tenant:
            raise AuthError(AuthFailure.TENANT)
        if not self._replay.claim(client.iss, jti, float(exp) + self._leeway):
            raise AuthError(AuthFailure.REPLAYED, f"jti {jti!r}")
        return VerifiedClient(client.iss)


def describe_clients(clients: TrustedClients) -> str:
    """One line per client for the start-up log: issuer and key source, no key material."""
    lines = []
    for c in clients.clients:
        source = "inline JWK set" if c.jwks is not None else (f"JWKS {c.jwks_url}" if c.jwks_url else "jku only")
        lines.append(f"{c.iss} ({source}; {len(c.jku)} jku allowed; algorithms {','.join(c.algorithms)})")
    return "; ".join(lines)
