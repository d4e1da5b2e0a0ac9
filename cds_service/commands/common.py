"""What every ``cds-service`` sub-command shares: exit codes, input errors, configuration options.

Exit codes are the same for every command, so scripts and CI jobs can rely on them:

- ``0`` (:attr:`ExitCode.OK`): nothing to report: no card fired, every policy file is valid, every
  check passed, every example was answered.
- ``1`` (:attr:`ExitCode.FINDING`): the command found something: a card fired, a policy file has
  problems, a conformance check failed, a call was not answered with 200.
- ``2`` (:attr:`ExitCode.USAGE`): the command could not do its job: bad options, an unreadable or
  malformed input file, a broken configuration, a service that cannot be reached.

Findings go to standard output; the reasons for exit code 2 go to standard error.
"""

from __future__ import annotations

import argparse
import json
import sys
from enum import IntEnum
from pathlib import Path
from typing import Any

from cds_service.config import Settings
from cds_service.engine import Engine


class ExitCode(IntEnum):
    OK = 0
    FINDING = 1
    USAGE = 2


EXIT_STATUS_HELP = (
    "Exit status, for every command: 0 nothing to report; 1 something found (a card fired, a policy file "
    "has problems, a check failed, a call was refused); 2 the command could not do its job (bad options, "
    "unusable input, broken configuration, service unreachable)."
)


class CommandError(Exception):
    """The command cannot go on (bad option, unusable input, unreachable service): exit code 2."""


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """``--policies``, ``--cards`` and ``--payer-name``: what the engine is built from."""
    parser.add_argument("--policies", help="policy directory (default: CDS_POLICIES_DIR, else the bundled policies/)")
    parser.add_argument("--cards", help="card template directory (default: CDS_CARDS_DIR, else the bundled cards/)")
    parser.add_argument("--payer-name", help="health plan name shown as the card source (default: CDS_PAYER_NAME)")


def settings_from_args(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Defaults, then ``CDS_*`` variables, then the engine options and ``overrides``."""
    return Settings.from_env(policies_dir=args.policies, cards_dir=args.cards, payer_name=args.payer_name, **overrides)


def load_engine(settings: Settings) -> Engine:
    """The engine ``serve`` builds from the same settings; a broken policy or card file raises
    ``PolicyError`` (exit 2)."""
    return Engine.from_settings(settings)


def read_json(source: str) -> object:
    """The JSON document in file ``source``, or on standard input for ``-``."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{source}: cannot read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{source}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise CommandError(f"{source}: the JSON is nested too deeply") from None
