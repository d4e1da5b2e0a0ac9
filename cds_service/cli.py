"""``cds-service``: the command line. ``serve`` runs the service under gunicorn."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError

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
from cds_service.policy import describe_validation_error
from cds_service.report import add_report_command
from cds_service.server import CONFIGURATION_ERRORS, default_pid_file, request_reload, serve
from cds_service.storage.commands import add_db_command

EXIT_USAGE = ExitCode.USAGE


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
    pid_file = args.pid_file or default_pid_file(args.port)
    serve(settings, host=args.host, port=args.port, workers=args.workers, pid_file=pid_file)
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
    serve.add_argument(
        "--pid-file", type=Path, help="where to write the master's pid (default: a runtime folder, per port)"
    )
    serve.set_defaults(handler=_serve)


def _reload(args: argparse.Namespace) -> int:
    try:
        message = request_reload(args.pid_file or default_pid_file(args.port))
    except OSError as exc:
        raise CommandError(str(exc)) from None  # no server to reach: exit code 2
    print(f"cds-service: {message}", file=sys.stderr)
    return ExitCode.OK


def add_reload_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    reload = commands.add_parser(
        "reload",
        help="make a running server re-read its policy files",
        description="Send SIGHUP to a running `cds-service serve`: it re-reads and checks the policy and card "
        "files, then replaces its workers without dropping requests. A broken file is rejected and the "
        "previous policies stay in service.",
    )
    reload.add_argument(
        "--port", type=int, default=8080, help="the server's port, to find its pid file (default: 8080)"
    )
    reload.add_argument("--pid-file", type=Path, help="the server's pid file (default: the one serve uses for --port)")
    reload.set_defaults(handler=_reload)


# Each entry adds one sub-command (with its handler) to the parser.
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (  # type: ignore[type-arg]
    add_serve_command,
    add_db_command,
    add_report_command,
    add_check_command,
    add_policies_command,
    add_demo_command,
    add_selfcheck_command,
    add_reload_command,
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
    except (*CONFIGURATION_ERRORS, CommandError) as exc:
        print(f"cds-service: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as exc:
        print(f"cds-service: invalid configuration: {describe_validation_error(exc)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
