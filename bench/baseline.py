"""The baseline: a bare Flask app that does the least a hook endpoint can do.

``POST /fixed/<name>`` receives the request body and answers with the service's own response to
the payload ``name``, recorded earlier in the same run, so both servers move the same bytes in and
out. It runs under :func:`cds_service.server.gunicorn_options`, the service's own production
settings, so the difference between the two is what the service does beyond the web framework.

``python -m bench.baseline --port N --responses FILE`` (FILE: ``{name: response JSON text}``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, request
from gunicorn.app.base import BaseApplication

from cds_service.server import gunicorn_options


def create_baseline_app(responses: Mapping[str, bytes]) -> Flask:
    app = Flask(__name__)
    fixed = dict(responses)

    @app.post("/fixed/<name>")
    def fixed_response(name: str) -> Response:
        request.get_data(cache=False)  # the service must read the body too
        body = fixed.get(name)
        if body is None:
            abort(404)
        return Response(body, mimetype="application/json")

    return app


class _BaselineServer(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:  # as the service's server does
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Flask:
        return self._app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--responses", type=Path, required=True, help="JSON object: payload name -> response text")
    args = parser.parse_args(argv)
    recorded = json.loads(args.responses.read_text(encoding="utf-8"))
    app = create_baseline_app({name: text.encode() for name, text in recorded.items()})
    _BaselineServer(app, gunicorn_options(host=args.host, port=args.port, workers=args.workers, log_level="INFO")).run()


if __name__ == "__main__":
    main()
