"""``cds-service check FILE...``: the cards the service would answer, computed offline.

Each input is a FHIR R4 ``ServiceRequest``, a ``Bundle`` of orders, or a whole CDS Hooks request,
in a file, a folder of ``*.json`` files, or on standard input (``-``). Resources and Bundles are
wrapped in an order-sign request (every order is evaluated) or, with ``--hook order-select``, an
order-select request that selects every ``ServiceRequest``. The same :class:`Engine` the server
runs evaluates them, so an analyst can run a folder of order catalogue entries through the policies
without starting anything: exit code 1 means at least one card fired. Nothing is recorded and
nothing is remembered between inputs (no audit trail, so no "already warned at order-select").
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from cds_service.commands.cardview import response_view
from cds_service.commands.common import (
    CommandError,
    ExitCode,
    add_engine_options,
    load_engine,
    read_json,
    settings_from_args,
)
from cds_service.engine import Engine
from cds_service.errors import ServiceError
from cds_service.hookrequest import Hook, HookRequest, parse_hook_request
from cds_service.services import SERVICES_BY_HOOK, ServiceDefinition

# Where `cds-service serve` listens by default; card links point here unless --base-url says otherwise.
DEFAULT_BASE_URL = "http://127.0.0.1:8080"


def _orders(entry: dict[str, Any]) -> bool:
    """Whether a Bundle entry holds a ServiceRequest (the resources the engine evaluates)."""
    resource = entry.get("resource")
    return isinstance(resource, dict) and resource.get("resourceType") == "ServiceRequest"


def wrap_orders(document: dict[str, Any], hook: Hook) -> dict[str, Any]:
    """A CDS Hooks request whose draftOrders hold ``document`` (a resource or a Bundle)."""
    bundle = document if document.get("resourceType") == "Bundle" else {"entry": [{"resource": document}]}
    entries = [entry for entry in bundle.get("entry") or [] if isinstance(entry, dict)]
    context: dict[str, Any] = {"userId": "Practitioner/offline-check", "patientId": "offline-check"}
    if hook is Hook.ORDER_SELECT:
        # Selections name orders by id; catalogue entries often have none, so number them.
        entries = [
            {**entry, "resource": {"id": f"order-{index}", **entry["resource"]}} if _orders(entry) else entry
            for index, entry in enumerate(entries, start=1)
        ]
        context["selections"] = [f"ServiceRequest/{entry['resource']['id']}" for entry in entries if _orders(entry)]
    context["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    return {"hook": hook.value, "hookInstance": str(uuid.uuid4()), "context": context}


def hook_request_for(document: object, hook: Hook | None, source: str) -> tuple[ServiceDefinition, HookRequest]:
    """The service that answers and the request it gets, for one input document."""
    if not isinstance(document, dict):
        raise CommandError(f"{source}: expected a JSON object (a ServiceRequest, a Bundle or a CDS Hooks request)")
    if "hook" in document or "context" in document:
        body = document
    elif document.get("resourceType") in {"ServiceRequest", "Bundle"}:
        body = wrap_orders(document, hook or Hook.ORDER_SIGN)
    else:
        raise CommandError(
            f"{source}: expected a ServiceRequest, a Bundle or a CDS Hooks request, "
            f"not resourceType {document.get('resourceType')!r}"
        )
    try:
        request = parse_hook_request(body)
    except ServiceError as exc:
        raise CommandError(f"{source}: not a valid CDS Hooks request: {exc.message}") from None
    return SERVICES_BY_HOOK[hook or request.hook], request


def evaluate(engine: Engine, document: object, hook: Hook | None, base_url: str, source: str) -> dict[str, Any]:
    """The exact response body the service would send for ``document``."""
    service, request = hook_request_for(document, hook, source)
    try:
        return engine.evaluate(service, request, base_url).response
    except ServiceError as exc:
        raise CommandError(f"{source}: {exc.message}") from None


def input_paths(sources: list[str]) -> Iterator[str]:
    """Files as given; a folder stands for the ``*.json`` files in it (sorted); ``-`` is stdin."""
    for source in sources:
        path = Path(source)
        if source != "-" and path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:
                raise CommandError(f"{source}: no *.json files in this folder")
            yield from (str(p) for p in found)
        else:
            yield source


def _check(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, base_url=args.base_url)
    engine = load_engine(settings)
    base_url = settings.base_url or DEFAULT_BASE_URL
    hook = Hook(args.hook) if args.hook else None
    # The engine logs resources that fail FHIR validation: worth seeing, but on stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="cds-service: %(message)s")
    console = Console(highlight=False)
    fired = failed = False
    for source in input_paths(args.files):
        try:
            response = evaluate(engine, read_json(source), hook, base_url, source)
        except CommandError as exc:
            print(f"cds-service: {exc}", file=sys.stderr)
            failed = True
            continue
        fired = fired or bool(response["cards"])
        if args.json:
            print(json.dumps(response, indent=2, ensure_ascii=False))
        else:
            count = len(response["cards"])
            console.print(Text(f"{source}: {count} card{'' if count == 1 else 's'}", style="bold"), soft_wrap=True)
            console.print(response_view(response))
    if failed:
        return ExitCode.USAGE
    return ExitCode.FINDING if fired else ExitCode.OK


def add_check_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    check = commands.add_parser(
        "check",
        help="show the cards the service would return for orders in files (offline)",
        description=(
            "Evaluate FHIR R4 ServiceRequests, Bundles of orders or whole CDS Hooks requests offline, with "
            "the same policies and card templates as the server, and print the cards that would be returned. "
            "Exit status: 0 no card fired, 1 at least one card fired, 2 an input could not be evaluated."
        ),
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="JSON file, folder of *.json files, or - for stdin")
    check.add_argument("--json", action="store_true", help="print each exact response body as JSON instead")
    check.add_argument(
        "--hook",
        choices=[hook.value for hook in Hook],
        help="answer as this hook's service (default: a request's own hook; order-sign for resources and Bundles)",
    )
    check.add_argument("--base-url", help=f"base URL for card links (default: CDS_BASE_URL, else {DEFAULT_BASE_URL})")
    add_engine_options(check)
    check.set_defaults(handler=_check)
