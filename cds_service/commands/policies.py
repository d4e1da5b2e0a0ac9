"""``cds-service policies list | show ID | validate [PATH]``: the policy analyst's view of the policies.

``validate`` runs the checks start-up runs (schema, file name, card templates rendered for the
policy, summary length) over files being written, and reports every problem as
``file:line: field: message`` instead of stopping at the first.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cds_service.cards import CardBuilder
from cds_service.commands.common import (
    CommandError,
    ExitCode,
    add_engine_options,
    load_engine,
    settings_from_args,
)
from cds_service.policy import Policy, PolicyError, Problem, load_policy_file, policies_by_id
from cds_service.terminology import DISPLAY_NAME


def _policy_row(policy: Policy) -> dict[str, object]:
    return {
        "id": policy.id,
        "title": policy.title,
        "version": policy.version,
        "codes": len(policy.codes),
        "phrases": len(policy.text.phrases),
        "studies": len(policy.evidence.studies),
    }


def _list(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    rows = [_policy_row(policy) for policy in load_engine(settings).policies]
    if args.json:
        print(json.dumps(rows, indent=2))
        return ExitCode.OK
    table = Table(title=f"Policies loaded from {settings.policies_dir}", title_justify="left")
    for column in rows[0]:
        numeric = isinstance(rows[0][column], int)
        # Only the title wraps; ids, versions and counts stay whole.
        table.add_column(column, justify="right" if numeric else "left", no_wrap=column != "title")
    for row in rows:
        table.add_row(*(str(value) for value in row.values()))
    Console(highlight=False).print(table)
    return ExitCode.OK


def _codes_table(policy: Policy) -> Table:
    table = Table(title="Codes", title_justify="left", expand=True)
    for column in ("System", "Code", "Description", "When it counts"):
        table.add_column(column)
    for rule in policy.codes:
        when = rule.condition if rule.requires_text else (f"always (range {rule.range})" if rule.range else "always")
        table.add_row(DISPLAY_NAME[rule.system], rule.code, rule.display, " ".join(str(when).split()))
    return table


def _text_rules(policy: Policy) -> Text:
    text = Text()
    text.append("Phrases (any letter case, on word boundaries): ", style="bold")
    text.append("; ".join(policy.text.phrases))
    if policy.text.acronyms:
        text.append("\nAcronyms (upper case, whole tokens): ", style="bold")
        text.append(", ".join(policy.text.acronyms))
        text.append("\n...only with one of these words in the order's text: ", style="bold")
        text.append(", ".join(policy.text.acronym_context))
    return text


def _show(args: argparse.Namespace) -> int:
    policies = policies_by_id(load_engine(settings_from_args(args)).policies)
    policy = policies.get(args.id)
    if policy is None:
        raise CommandError(f"no policy '{args.id}' is loaded; loaded: {', '.join(policies)}")
    if args.json:
        print(json.dumps(policy.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return ExitCode.OK
    evidence = policy.evidence
    header = Text()
    header.append(f"{policy.id} {policy.title}\n", style="bold")
    header.append(f"Version {policy.version} · {policy.status} · published {policy.publish_date} · ")
    header.append(f"last review {policy.last_review_date} · card template '{policy.card}'\n")
    header.append(f"Position: {policy.position.value}. ", style="bold")
    header.append(" ".join(policy.position_statement.split()))
    header.append("\nEvidence: ", style="bold")
    header.append(
        f"{len(evidence.studies)} studies, {sum(s.ire_subjects for s in evidence.studies)} patients treated; "
        f"{len(evidence.meta_analyses)} reviews, {len(evidence.guidelines)} guidelines, "
        f"{len(evidence.references)} references"
    )
    body = Group(header, Text(), _text_rules(policy), Text(), _codes_table(policy))
    Console(highlight=False).print(Panel(body, title=policy.id, title_align="left"))
    return ExitCode.OK


def _policy_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.yaml"))
        if not files:
            raise CommandError(f"{path}: no policy files (*.yaml) found")
        return files
    if path.is_file():
        return [path]
    raise CommandError(f"{path}: no such file or directory")


def validate_files(files: Sequence[Path], cards_dir: Path, payer: str) -> list[Problem]:
    """Every problem in ``files``: schema errors per file, then each valid policy's card rendering."""
    problems: list[Problem] = []
    for path in files:
        try:
            policy = load_policy_file(path)
        except PolicyError as exc:
            problems.extend(exc.problems or [Problem(path, None, None, str(exc))])
            continue
        try:
            CardBuilder(cards_dir, [policy], payer)
        except PolicyError as exc:
            problems.extend(exc.problems or [Problem(path, None, "card", str(exc))])
    return problems


def _validate(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    files = _policy_files(Path(args.path) if args.path else settings.policies_dir)
    problems = validate_files(files, settings.cards_dir, settings.payer_name)
    for problem in problems:
        print(problem)
    broken = len({problem.path for problem in problems})
    print(f"{len(files)} policy file{'s' if len(files) != 1 else ''} checked: ", end="")
    print(f"{len(problems)} problem(s) in {broken} file(s)" if problems else "all valid")
    return ExitCode.FINDING if problems else ExitCode.OK


def add_policies_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    policies = commands.add_parser(
        "policies",
        help="list, show and validate policy files",
        description="List the loaded policies, show one policy's codes and synonyms, or validate policy files.",
    )
    actions = policies.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="the loaded policies", description="List the loaded policies.")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_engine_options(listing)
    listing.set_defaults(handler=_list)

    show = actions.add_parser(
        "show", help="one policy's codes and synonyms", description="Show one policy: codes, text rules, evidence."
    )
    show.add_argument("id", metavar="ID", help="policy id, e.g. SURG.00126")
    show.add_argument("--json", action="store_true", help="print the policy as JSON")
    add_engine_options(show)
    show.set_defaults(handler=_show)

    validate = actions.add_parser(
        "validate",
        help="check policy files being written",
        description=(
            "Check policy files as start-up does (schema, file name, card templates, summary length) and "
            "print every problem as FILE:LINE: FIELD: MESSAGE. "
            "Exit status: 0 all valid, 1 problems found, 2 PATH missing or unusable."
        ),
    )
    validate.add_argument("path", nargs="?", metavar="PATH", help="a policy file or folder (default: the policies)")
    add_engine_options(validate)
    validate.set_defaults(handler=_validate)
