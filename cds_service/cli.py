"""``cds-service``: the command line. ``serve`` runs the service under gunicorn."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from pydantic import ValidationError

from cds_service import create_app
from cds_service.auth import TrustedClientsError
from cds_service.commands.check import add_check_command
from cds_service.commands.common import (
    EXIT_STATUS_HELP,
    CommandError,
    ExitCode,
    add_engine_options,
    settings_from_args,
)
from cds_service.commands.demo import add_demo_command
from cds_service.commands.policies import add_policies_command
from cds_service.commands.selfcheck import add_selfcheck_command
from cds_service.policy import PolicyError, describe_validation_error
from cds_service.report import add_report_command
from cds_service.storage import StorageError
from cds_service.storage.commands import add_db_command

EXIT_USAGE = ExitCode.USAGE


class _Gunicorn(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn with its options set in code, serving an app that is already loaded."""

    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)
        # gunicorn 27 opens a control socket at one fixed path per user; two instances on one
        # host would fight over it, and this service needs none.
        if "control_socket_disable" in self.cfg.settings:
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Flask:
        return self._app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(
        args, base_url=args.base_url, trusted_clients=args.trusted_clients, upgrade_db=args.upgrade_db or None
    )
    if settings.trusted_clients is None and not _is_loopback(args.host) and not args.allow_anonymous:
        print(
            f"cds-service: refusing to listen on {args.host} without client authentication: give "
            "--trusted-clients FILE (or CDS_TRUSTED_CLIENTS), or --allow-anonymous to serve anyone.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    app = create_app(settings)  # policies and the database schema are checked here, before any worker starts
    policies = app.extensions["cds_engine"].policies
    print(f"cds-service: loaded policies {', '.join(p.id for p in policies)}", file=sys.stderr)
    audit = app.extensions["cds_audit"]
    print(f"cds-service: database {audit.store.location}", file=sys.stderr)
    print(f"cds-service: patient and user ids hashed with the key from {audit.hasher.source}", file=sys.stderr)
    print(f"cds-service: discovery at http://{args.host}:{args.port}/cds-services", file=sys.stderr)
    _Gunicorn(
        app,
        {
            "bind": f"{args.host}:{args.port}",
            "workers": args.workers,
            "worker_class": "sync",
            # An EHR waits on us; a request still running after this is stuck, not slow.
            "timeout": 30,
            "graceful_timeout": 20,
            "keepalive": 5,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": settings.log_level.lower(),
            "limit_request_line": 8190,
            "limit_request_fields": 100,
        },
    ).run()
    return 0


def add_serve_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = commands.add_parser(
        "serve", help="run the service with gunicorn", description="Run the CDS Hooks service with gunicorn."
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to bind (default: 8080)")
    serve.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default: 2)")
    serve.add_argument("--base-url", help="public base URL for card links, e.g. https://cds.example.org")
    add_engine_options(serve)
    serve.add_argument(
        "--trusted-clients", help="YAML/JSON file of CDS clients whose JWTs are accepted (turns authentication on)"
    )
    serve.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="serve on a non-loopback address without client authentication (testing only)",
    )
    serve.add_argument(
        "--upgrade-db", action="store_true", help="apply pending database migrations first (CDS_UPGRADE_DB)"
    )
    serve.set_defaults(handler=_serve)


# Each entry adds one sub-command (with its handler) to the parser.
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (  # type: ignore[type-arg]
    add_serve_command,
    add_db_command,
    add_report_command,
    add_check_command,
    add_policies_command,
    add_demo_command,
    add_selfcheck_command,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cds-service",
        description="CDS Hooks 2.0 service for payer medical policies (e.g. SURG.00126, IRE).",
        epilog=EXIT_STATUS_HELP,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (PolicyError, TrustedClientsError, StorageError, CommandError) as exc:
        print(f"cds-service: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as exc:
        print(f"cds-service: invalid configuration: {describe_validation_error(exc)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
