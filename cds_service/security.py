"""Client authentication for the HTTP layer, as one decorator, and the proxy headers it trusts."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TypeVar, cast

from flask import Flask, current_app, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from cds_service.auth import (
    AuthError,
    AuthFailure,
    JwksCache,
    MemoryReplayCache,
    ReplayCache,
    TokenVerifier,
    describe_clients,
    load_trusted_clients,
)
from cds_service.config import Settings
from cds_service.errors import Unauthorized
from cds_service.metrics import count_auth_failure
from cds_service.web import base_url

log = logging.getLogger(__name__)
VERIFIER_KEY = "cds_verifier"
F = TypeVar("F", bound=Callable[..., object])


def init_security(app: Flask, settings: Settings, replay: ReplayCache | None = None) -> None:
    """Load the trusted clients (a broken file stops start-up) or announce that the service is open."""
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n, x_prefix=n)  # type: ignore[method-assign]
    if settings.trusted_clients is None:
        app.extensions[VERIFIER_KEY] = None
        log.warning(
            "AUTHENTICATION IS OFF: no trusted-clients file (CDS_TRUSTED_CLIENTS / --trusted-clients), so any "
            "caller can invoke the hooks. Use this only for local development and sandboxes."
        )
        return
    clients = load_trusted_clients(settings.trusted_clients)
    app.extensions[VERIFIER_KEY] = TokenVerifier(
        clients,
        replay or MemoryReplayCache(),
        jwks=JwksCache(timeout=settings.jwks_timeout_s, min_refetch=settings.jwks_min_refetch_s),
        max_lifetime=settings.jwt_max_lifetime_s,
        leeway=settings.jwt_leeway_s,
    )
    log.info("client authentication on; trusted clients: %s", describe_clients(clients))


def _audiences() -> list[str]:
    """The URL that was called; for feedback, also the service's URL (clients differ on which)."""
    called = base_url() + request.path
    audiences = [called]
    if request.path.endswith("/feedback"):
        audiences.append(called.removesuffix("/feedback"))
    return audiences


def _bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(AuthFailure.MISSING if not header else AuthFailure.MALFORMED)
    return token.strip()


def authenticated(view: F) -> F:
    """Require a valid CDS Hooks client JWT when trusted clients are configured.

    On success the caller's issuer is in ``g.auth_client`` for
    the audit trail. The log says why a call was refused, never the token.
    """

    @functools.wraps(view)
    def wrapper(*args: object, **kwargs: object) -> object:
        verifier: TokenVerifier | None = current_app.extensions.get(VERIFIER_KEY)
        if verifier is not None:
            try:
                client = verifier.verify(_bearer_token(), _audiences())
            except AuthError as exc:
                log.warning(
                    "401 %s %s: %s%s",
                    request.method,
                    request.path,
                    exc.failure.value,
                    f" ({exc.detail})" if exc.detail else "",
                )
                count_auth_failure(exc.failure)
                raise Unauthorized(exc.failure.value) from None
            g.auth_client = client.iss
        return view(*args, **kwargs)

    return cast(F, wrapper)
