"""``cds-service selfcheck --url URL``: a conformance self-check of a running deployment.

It acts as the CDS clients integrators care about and reports a pass/fail table:

- Discovery as CDS Hooks 2.0 "Discovery" asks (and the sandbox needs: a non-empty list).
- Hook calls: every bundled example (sandbox-style and Da Vinci CRD-style requests among them)
  sent to the service for its hook, plus the sandbox's habit of calling an order-sign service with
  ``hook: order-select``; the cards must be the ones recorded for the example.
- Card rules (:mod:`cds_service.cardrules`) over every card that came back.
- Feedback: an override with one of the card's reasons and an acceptance of a suggestion.
  (These are real feedback calls: on a deployment that stores feedback they are stored.)
- CORS: preflights as a browser client (the sandbox) sends them, and the header on a real answer.
- Errors: malformed JSON and a broken envelope (400), unknown service (404), wrong method (405),
  a body over the limit (413), each a JSON OperationOutcome, never an HTML page.
- Authentication: whether unsigned calls are refused; with ``--private-key`` every call is signed
  and, when the deployment checks tokens, expired, wrong-audience, replayed and unsigned
  (``alg: none``) tokens must get 401.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import jwt
import requests
from rich.console import Console
from rich.table import Table

from cds_service.cardrules import Rule, response_problems
from cds_service.commands.client import (
    TOKEN_LIFETIME_S,
    Client,
    add_client_options,
    client_from_args,
    describe_status,
)
from cds_service.commands.common import CommandError, ExitCode
from cds_service.config import Settings
from cds_service.examples import Example, load_examples
from cds_service.hookrequest import Hook

SANDBOX_ORIGIN = "https://sandbox.cds-hooks.org"
DEFAULT_MAX_BODY_BYTES: int = Settings.model_fields["max_body_bytes"].default


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "FAIL"
    WARN = "warn"  # worth knowing, not a failure (e.g. authentication is off)
    SKIP = "skip"


STYLES = {Outcome.PASS: "green", Outcome.FAIL: "bold red", Outcome.WARN: "yellow", Outcome.SKIP: "dim"}


@dataclass(frozen=True, slots=True)
class Row:
    section: str
    check: str
    outcome: Outcome
    detail: str


@dataclass(frozen=True, slots=True)
class HookCall:
    example: Example
    response: requests.Response
    body: dict[str, Any]


def _json(response: requests.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def _is_operation_outcome(response: requests.Response) -> bool:
    body = _json(response)
    return (
        response.headers.get("Content-Type", "").startswith("application/json")
        and isinstance(body, dict)
        and body.get("resourceType") == "OperationOutcome"
    )


class SelfCheck:
    """One run against one deployment; rows accumulate in order."""

    def __init__(self, client: Client, examples: list[Example], origin: str, max_body_bytes: int) -> None:
        self.client = client
        self.examples = examples
        self.origin = origin
        self.max_body_bytes = max_body_bytes
        self.rows: list[Row] = []
        self.services: dict[Hook, str] = {}

    def add(self, section: str, check: str, passed: bool, detail: str, failure: Outcome = Outcome.FAIL) -> None:
        self.rows.append(Row(section, check, Outcome.PASS if passed else failure, detail))

    def guarded(self, section: str, check: str, step: Callable[[], None]) -> None:
        """Run one check; a call that gets no answer at all fails that check, not the run."""
        try:
            step()
        except CommandError as exc:
            self.add(section, check, False, str(exc))

    def run(self) -> list[Row]:
        self.discovery()  # unreachable: CommandError, exit 2
        auth_required, auth_detail = self.authentication_probe()
        calls = self.hook_calls(auth_required)
        self.card_rules(calls)
        self.guarded("Feedback", "override and acceptance answered 200", lambda: self.feedback(calls))
        self.guarded("CORS", "preflights and response headers", self.cors)
        self.guarded("Errors", "error statuses", self.errors)
        self.add("Authentication", "unsigned hook call is refused", auth_required, auth_detail, Outcome.WARN)
        self.guarded("Authentication", "JWT checks", lambda: self.jwt_checks(auth_required))
        return self.rows

    # Discovery -----------------------------------------------------------------------------------

    def discovery(self) -> None:
        response = self.client.call("GET", "/cds-services")
        body = _json(response)
        services = body.get("services") if isinstance(body, dict) else None
        ok = response.status_code == 200 and isinstance(services, list) and bool(services)
        detail = f"{len(services)} services" if ok and services else describe_status(response)
        self.add("Discovery", "GET /cds-services answers 200 with a non-empty services list", ok, detail)
        if not ok or not services:
            return
        missing = [
            f"services[{index}].{key}"
            for index, service in enumerate(services)
            for key in ("hook", "id", "description")
            if not (isinstance(service, dict) and isinstance(service.get(key), str) and service[key])
        ]
        self.add("Discovery", "every service has hook, id and description", not missing, ", ".join(missing) or "yes")
        ids = [service.get("id") for service in services if isinstance(service, dict)]
        self.add("Discovery", "service ids are unique", len(ids) == len(set(ids)), ", ".join(map(str, ids)))
        for service in services:
            if (
                isinstance(service, dict)
                and service.get("hook") in set(Hook)
                and service.get("hook") not in self.services
            ):
                self.services[Hook(service["hook"])] = str(service.get("id"))
        for hook in Hook:
            found = self.services.get(hook)
            self.add("Discovery", f"a service for {hook.value}", found is not None, found or "none advertised")

    # Hook calls and cards --------------------------------------------------------------------------

    def authentication_probe(self) -> tuple[bool, str]:
        """Whether an unsigned hook call is refused (the deployment checks client JWTs), and why."""
        service = self.services.get(Hook.ORDER_SIGN) or next(iter(self.services.values()), None)
        if service is None or not self.examples:
            return False, "no service to call"
        request = self.examples[0].fresh_request()
        response = self.client.call("POST", f"/cds-services/{service}", sign=False, json=request)
        if response.status_code != 401:
            return False, f"{response.status_code}: anyone can call the hooks (no trusted clients configured)"
        if self.client.signer is None:
            return True, "401; give --private-key, --kid and --iss of a trusted client to check the rest"
        return True, "401"

    def hook_calls(self, auth_required: bool) -> list[HookCall]:
        calls = []
        for example in self.examples:
            hook = Hook(example.request["hook"])
            check = f"{example.name} → {hook.value} service"
            service = self.services.get(hook)
            if service is None:
                self.add("Hook calls", check, False, f"no {hook.value} service", Outcome.SKIP)
                continue
            try:
                response = self.client.call("POST", f"/cds-services/{service}", json=example.fresh_request())
            except CommandError as exc:
                self.add("Hook calls", check, False, str(exc))
                continue
            body = _json(response)
            if response.status_code != 200 or not isinstance(body, dict):
                hint = " (unsigned: see Authentication)" if auth_required and self.client.signer is None else ""
                self.add("Hook calls", check, False, describe_status(response) + hint)
                continue
            calls.append(HookCall(example, response, body))
            got, recorded = len(body.get("cards") or []), len(example.response["cards"])
            self.add("Hook calls", check, got == recorded, f"200, {got} card(s); recorded: {recorded}")
        self.guarded("Hook calls", "sandbox quirk", self.sandbox_quirk)
        return calls

    def sandbox_quirk(self) -> None:
        """The reference sandbox stamps ``hook: order-select`` even on calls to an order-sign service."""
        select = next((e for e in self.examples if e.request["hook"] == Hook.ORDER_SELECT.value), None)
        service = self.services.get(Hook.ORDER_SIGN)
        if select is None or service is None:
            return
        response = self.client.call("POST", f"/cds-services/{service}", json=select.fresh_request())
        check = "order-select request sent to the order-sign service (sandbox habit)"
        body = _json(response)
        ok = response.status_code == 200 and isinstance(body, dict) and isinstance(body.get("cards"), list)
        self.add("Hook calls", check, ok, "200" if ok else describe_status(response))

    def card_rules(self, calls: list[HookCall]) -> None:
        cards = sum(len(call.body.get("cards") or []) for call in calls)
        if not calls:
            self.add("Cards", "card rules", False, "no hook call answered 200", Outcome.SKIP)
            return
        problems = [(call.example.name, p) for call in calls for p in response_problems(call.body)]
        for rule in Rule:
            broken = [f"{name}: {p}" for name, p in problems if p.rule is rule]
            detail = "; ".join(broken[:3]) + (f"; and {len(broken) - 3} more" if len(broken) > 3 else "")
            self.add("Cards", rule.value, not broken, detail or f"{cards} cards")
        content_type = {call.response.headers.get("Content-Type", "") for call in calls}
        json_only = all(value.startswith("application/json") for value in content_type)
        self.add("Cards", "responses are application/json", json_only, ", ".join(sorted(content_type)))

    # Feedback ------------------------------------------------------------------------------------

    def feedback(self, calls: list[HookCall]) -> None:
        """Override the first card with its first reason (as the sandbox sends it), accept its first suggestion."""
        cards = [
            (call, card)
            for call in calls
            for card in call.body.get("cards") or []
            if isinstance(card, dict) and isinstance(card.get("uuid"), str)
        ]
        if not cards:
            self.add("Feedback", "feedback", False, "no card with a uuid came back to give feedback on", Outcome.SKIP)
            return
        call, card = cards[0]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        override: dict[str, Any] = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": now}
        reason = next((r for r in card.get("overrideReasons") or [] if isinstance(r, dict) and "code" in r), None)
        if reason is not None:  # the sandbox sends the reason's code and system, no display
            override["overrideReason"] = {"reason": {"code": reason["code"], "system": reason.get("system")}}
        items = [override]
        suggestion = next((s for s in card.get("suggestions") or [] if isinstance(s, dict) and "uuid" in s), None)
        if suggestion is not None:
            accepted = {"id": suggestion["uuid"]}
            items.append(
                {
                    "card": card["uuid"],
                    "outcome": "accepted",
                    "acceptedSuggestions": [accepted],
                    "outcomeTimestamp": now,
                }
            )
        service = self.services[Hook(call.example.request["hook"])]
        response = self.client.call("POST", f"/cds-services/{service}/feedback", json={"feedback": items})
        ok = response.status_code == 200
        detail = f"200 for {len(items)} item(s)" if ok else describe_status(response)
        self.add("Feedback", "override with a reason and an acceptance answered 200", ok, detail)

    # CORS ----------------------------------------------------------------------------------------

    def cors(self) -> None:
        service = next(iter(self.services.values()), None)
        paths = {"/cds-services": "GET"}
        if service is not None:
            paths[f"/cds-services/{service}"] = "POST"
            paths[f"/cds-services/{service}/feedback"] = "POST"
        for path, method in paths.items():
            response = self.client.call(
                "OPTIONS",
                path,
                sign=False,  # browsers send no credentials on a preflight
                headers={
                    "Origin": self.origin,
                    "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
            allowed_origin = response.headers.get("Access-Control-Allow-Origin", "")
            allowed_headers = response.headers.get("Access-Control-Allow-Headers", "").lower()
            allowed_methods = response.headers.get("Access-Control-Allow-Methods", "").upper()
            problems = []
            if not 200 <= response.status_code < 300:
                problems.append(f"status {response.status_code}")
            if allowed_origin not in {"*", self.origin}:
                problems.append(f"Allow-Origin {allowed_origin!r}")
            # "*" never covers Authorization, so it must be named.
            problems.extend(
                f"{h} not in Allow-Headers" for h in ("authorization", "content-type") if h not in allowed_headers
            )
            if method not in allowed_methods:
                problems.append(f"{method} not in Allow-Methods")
            detail = "; ".join(problems) or f"{response.status_code}, origin {allowed_origin}"
            self.add("CORS", f"preflight OPTIONS {path} from {self.origin}", not problems, detail)
        response = self.client.call("GET", "/cds-services", headers={"Origin": self.origin})
        allowed_origin = response.headers.get("Access-Control-Allow-Origin", "")
        self.add(
            "CORS",
            "answers carry Access-Control-Allow-Origin",
            allowed_origin in {"*", self.origin},
            allowed_origin or "header missing",
        )

    # Errors --------------------------------------------------------------------------------------

    def errors(self) -> None:
        service = next(iter(self.services.values()), "medical-policy-order-sign")
        json_type = {"Content-Type": "application/json"}
        broken = self.examples[0].fresh_request() if self.examples else {"hook": "order-sign"}
        broken = {key: value for key, value in broken.items() if key != "context"}
        oversize = b"{" + b" " * self.max_body_bytes + b"}"
        cases: list[tuple[str, int, Callable[[], requests.Response]]] = [
            (
                "malformed JSON",
                400,
                lambda: self.client.call("POST", f"/cds-services/{service}", data="{", headers=json_type),
            ),
            ("request without context", 400, lambda: self.client.call("POST", f"/cds-services/{service}", json=broken)),
            ("unknown service", 404, lambda: self.client.call("POST", "/cds-services/no-such-service", json={})),
            ("GET on a hook endpoint", 405, lambda: self.client.call("GET", f"/cds-services/{service}")),
            (
                f"body over {self.max_body_bytes} bytes",
                413,
                lambda: self.client.call("POST", f"/cds-services/{service}", data=oversize, headers=json_type),
            ),
        ]
        for name, expected, send in cases:
            response = send()
            ok = response.status_code == expected and _is_operation_outcome(response)
            detail = describe_status(response)
            if response.status_code == expected and not ok:
                detail += f" (Content-Type {response.headers.get('Content-Type')}, not an OperationOutcome)"
            self.add("Errors", f"{name} → {expected} OperationOutcome", ok, detail)

    # Authentication ------------------------------------------------------------------------------

    def jwt_checks(self, auth_required: bool) -> None:
        signer = self.client.signer
        if signer is None:
            self.add("Authentication", "signed calls", False, "no --private-key given", Outcome.SKIP)
            return
        service = self.services.get(Hook.ORDER_SIGN) or next(iter(self.services.values()), None)
        if service is None or not self.examples:
            return
        path = f"/cds-services/{service}"
        url = self.client.url(path)

        def post(token: str | None) -> requests.Response:
            return self.client.call("POST", path, token=token, json=self.examples[0].fresh_request())

        label = f"{signer.algorithm}, kid {signer.kid}, iss {signer.iss}"
        first_token = signer.token(url)  # sent again below: the replay check
        signed = post(first_token)
        self.add("Authentication", f"signed hook call ({label})", signed.status_code == 200, describe_status(signed))
        discovery = self.client.call("GET", "/cds-services")
        self.add("Authentication", "signed discovery call", discovery.status_code == 200, str(discovery.status_code))
        if not auth_required:
            self.add(
                "Authentication", "bad tokens refused", False, "the deployment does not check tokens", Outcome.SKIP
            )
            return
        now = time.time()
        bad_tokens = {
            "expired token": signer.token(url, issued_at=now - 2 * TOKEN_LIFETIME_S - 60),
            "token for another URL (aud)": signer.token(self.client.url("/cds-services/another-service")),
            "the first token again (jti replay)": first_token,
            "unsigned token (alg none)": jwt.encode(
                {
                    "iss": signer.iss,
                    "aud": url,
                    "iat": int(now),
                    "exp": int(now) + TOKEN_LIFETIME_S,
                    "jti": f"none-{now}",
                },
                None,
                algorithm="none",
                headers={"kid": signer.kid},
            ),
        }
        for name, token in bad_tokens.items():
            response = post(token)
            self.add("Authentication", f"{name} → 401", response.status_code == 401, describe_status(response))


def _render(rows: list[Row], base: str) -> None:
    table = Table(title=f"CDS Hooks self-check of {base}", title_justify="left", expand=True)
    table.add_column("Check", ratio=3)
    table.add_column("Result", no_wrap=True)
    table.add_column("Detail", ratio=2, overflow="fold")
    section = None
    for row in rows:
        if row.section != section:
            if section is not None:
                table.add_section()
            table.add_row(f"[bold]{row.section}[/]", "", "")
            section = row.section
        table.add_row(f"  {row.check}", f"[{STYLES[row.outcome]}]{row.outcome.value}[/]", row.detail)
    console = Console(highlight=False)
    console.print(table)
    counts = {outcome: sum(row.outcome is outcome for row in rows) for outcome in Outcome}
    console.print(", ".join(f"{counts[o]} {o.value.lower()}" for o in Outcome if counts[o]))


def _selfcheck(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    rows = SelfCheck(client, load_examples(), args.origin, args.max_body_bytes).run()
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
    else:
        _render(rows, client.base)
    return ExitCode.FINDING if any(row.outcome is Outcome.FAIL for row in rows) else ExitCode.OK


def add_selfcheck_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    selfcheck = commands.add_parser(
        "selfcheck",
        help="check a running deployment against CDS Hooks and CRD rules",
        description=(
            "Replay sandbox-style and CRD-style hook requests at a running deployment and check discovery, "
            "card rules, feedback, CORS, error statuses and (given a key) JWT authentication. "
            "Exit status: 0 every check passed, 1 some check failed, 2 bad options or no service."
        ),
    )
    add_client_options(selfcheck)
    selfcheck.add_argument(
        "--origin", default=SANDBOX_ORIGIN, help=f"browser origin for the CORS checks (default: {SANDBOX_ORIGIN})"
    )
    selfcheck.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="the deployment's CDS_MAX_BODY_BYTES; one byte more must get 413 (default: %(default)s)",
    )
    selfcheck.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    selfcheck.set_defaults(handler=_selfcheck)
