"""``cds-service demo --url URL``: fire the bundled example hook requests at a running service.

Each example goes to the deployment's service for its hook with a fresh ``hookInstance``; the cards
that come back are shown as a clinician would read them, then a table says, per example, the status,
the number of cards and whether the answer is the one recorded in ``examples/responses/`` (uuids
and the base URL of links aside; a different payer name or policy set shows up there too).
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from cds_service.commands.cardview import response_view
from cds_service.commands.client import add_client_options, client_from_args, describe_status
from cds_service.commands.common import ExitCode
from cds_service.examples import RECORDED_BASE_URL, comparable, load_examples


def _demo(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    console = Console(highlight=False)
    summary = Table(title="What came back", title_justify="left")
    for column in ("Example", "Hook", "Status", "Cards", "As recorded"):
        summary.add_column(column)
    failed = False
    for example in load_examples():
        path = f"/cds-services/{example.service.id}"
        response = client.call("POST", path, json=example.fresh_request())
        console.print(Rule(f"{example.name} → POST {path}", align="left"))
        try:
            body = response.json() if response.status_code == 200 else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            failed = True
            console.print(Text(f"No cards: {describe_status(response)}", style="bold red"))
            summary.add_row(example.name, example.service.hook, str(response.status_code), "-", "-")
            continue
        console.print(response_view(body))
        same = comparable(body, client.base) == comparable(example.response, RECORDED_BASE_URL)
        cards = len(body.get("cards") or [])
        summary.add_row(example.name, example.service.hook, "200", str(cards), "yes" if same else "no")
    console.print(summary)
    return ExitCode.FINDING if failed else ExitCode.OK


def add_demo_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    demo = commands.add_parser(
        "demo",
        help="send the bundled example hook requests to a running service",
        description=(
            "Send each bundled example hook request (order-select and order-sign, IRE and not) to the running "
            "service for its hook and show the cards that come back. "
            "Exit status: 0 every example answered 200, 1 some example was not, 2 bad options or no service."
        ),
    )
    add_client_options(demo)
    demo.set_defaults(handler=_demo)
