"""CORS for browser-based CDS clients such as the CDS Hooks sandbox.

CDS Hooks 2.0 ("Cross-Origin Resource Sharing") says services and browser clients "will require
CORS support" and leaves the details to the Fetch standard. This is the whole of what the service
needs, written out because a general-purpose extension (flask-cors, measured by bench/run) spent
about 48 µs of every request matching resource patterns: here it is a prefix test and a few static
headers.

- Preflights (OPTIONS with Access-Control-Request-Method) on discovery, hooks, feedback and the
  evidence pages are answered 200 without authentication (browsers send no credentials on them),
  naming Authorization and Content-Type explicitly: browsers never let "*" cover Authorization.
- Actual responses, errors included, carry Access-Control-Allow-Origin: "*" when any origin is
  allowed (no cookies are used, so "*" is enough), else the caller's origin if it is on the list,
  with Vary: Origin so caches keep the answers apart.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Flask, Response, request

SCOPE = ("/cds-services", "/evidence/")
ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Accept, X-Request-ID"
EXPOSE_HEADERS = "X-Request-ID"
MAX_AGE = "86400"


def init_cors(app: Flask, origins: Iterable[str]) -> None:
    allowed = frozenset(origins)
    any_origin = "*" in allowed

    def allow_origin(response: Response) -> None:
        if any_origin:
            response.headers["Access-Control-Allow-Origin"] = "*"
            return
        response.vary.add("Origin")
        origin = request.headers.get("Origin")
        if origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin

    @app.before_request
    def _preflight() -> Response | None:
        if (
            request.method != "OPTIONS"
            or "Access-Control-Request-Method" not in request.headers
            or not request.path.startswith(SCOPE)
        ):
            return None
        response = Response(status=200)
        allow_origin(response)
        response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = MAX_AGE
        return response

    @app.after_request
    def _actual(response: Response) -> Response:
        if request.method != "OPTIONS" and request.path.startswith(SCOPE):
            allow_origin(response)
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        return response
