"""Cards as a clinician would see them, in the terminal (rich): used by ``check`` and ``demo``.

The rendering reads cards defensively: ``demo`` shows whatever a server sent back, conformant or
not, so a missing or mistyped field is shown as absent rather than raising.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

INDICATOR_STYLES = {
    "critical": ("bold white on red", "red"),
    "warning": ("bold black on yellow", "yellow"),
    "info": ("bold white on blue", "blue"),
}


def _items(value: object) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _section(title: str, rows: list[RenderableType]) -> RenderableType | None:
    """A bold heading over bullet rows that wrap with a hanging indent."""
    if not rows:
        return None
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=1)
    grid.add_column(ratio=1)
    for row in rows:
        grid.add_row("•", row)
    return Group(Text(title, style="bold"), Padding(grid, (0, 0, 0, 1)))


def _suggestions(card: dict[str, Any]) -> RenderableType | None:
    rows: list[RenderableType] = []
    for suggestion in _items(card.get("suggestions")):
        text = Text(str(suggestion.get("label", "")))
        if suggestion.get("isRecommended"):
            text.append(" (recommended)", style="italic")
        for action in _items(suggestion.get("actions")):
            target = action.get("resourceId") or "a resource"
            text.append(f"\n{action.get('type', '?')} {target}: {action.get('description', '')}", style="dim")
        rows.append(text)
    return _section(f"Suggestions (selectionBehavior: {card.get('selectionBehavior', 'not given')})", rows)


def _links(card: dict[str, Any]) -> RenderableType | None:
    rows: list[RenderableType] = []
    for link in _items(card.get("links")):
        url = str(link.get("url", ""))
        text = Text(f"{link.get('label', '')}\n")
        text.append(url, style=f"cyan link {url}" if url.startswith(("http://", "https://")) else "cyan")
        rows.append(text)
    return _section("Links", rows)


def _override_reasons(card: dict[str, Any]) -> RenderableType | None:
    reasons = _items(card.get("overrideReasons"))
    return _section("Override reasons", [Text(str(r.get("display") or r.get("code", ""))) for r in reasons])


def _source(card: dict[str, Any]) -> Text:
    source = card.get("source") if isinstance(card.get("source"), dict) else {}
    topic = source.get("topic") if isinstance(source.get("topic"), dict) else {}
    text = Text("Source: ", style="bold")
    text.append(str(source.get("label", "none given")))
    if topic:
        text.append(f" (topic {topic.get('code', '?')})", style="dim")
    return text


def card_panel(card: dict[str, Any]) -> Panel:
    """One card: indicator badge, summary, detail, suggestions, links, override reasons, source."""
    indicator = str(card.get("indicator", "?"))
    badge, border = INDICATOR_STYLES.get(indicator, ("bold reverse", "white"))
    parts: list[RenderableType] = [Text(str(card.get("summary", "")), style="bold"), Text()]
    if isinstance(card.get("detail"), str):
        parts.append(Markdown(card["detail"]))
    for section in (_suggestions(card), _links(card), _override_reasons(card)):
        if section is not None:
            parts.extend((Text(), section))
    parts.extend((Text(), _source(card)))
    return Panel(
        Group(*parts), title=Text(f" {indicator.upper()} ", style=badge), title_align="left", border_style=border
    )


def response_view(response: object) -> RenderableType:
    """The cards of a hook response, or a line saying there are none."""
    cards = _items(response.get("cards")) if isinstance(response, dict) else []
    if not cards:
        return Text("No card: nothing in these orders falls under a loaded policy.", style="green")
    return Group(*(card_panel(card) for card in cards))
