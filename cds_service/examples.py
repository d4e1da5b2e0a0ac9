"""The bundled example hook requests (``examples/*.json``) and the responses recorded for them.

``examples/responses/NAME.json`` is what ``cds-service serve`` with its defaults (listening on
``http://127.0.0.1:8080``, payer "Health plan") answers for ``examples/NAME.json``; re-record one with
``cds-service check --json examples/NAME.json > examples/responses/NAME.json``. The ``demo`` and
``selfcheck`` commands and the tests replay them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cds_service.config import data_dir
from cds_service.hookrequest import Hook
from cds_service.services import SERVICES_BY_HOOK, ServiceDefinition

RECORDED_BASE_URL = "http://127.0.0.1:8080"
UUID_PLACEHOLDER = "<uuid>"


@dataclass(frozen=True, slots=True)
class Example:
    name: str
    request: dict[str, Any]
    response: dict[str, Any]

    def fresh_request(self) -> dict[str, Any]:
        """The request with a new hookInstance: a client sends a fresh one on every call."""
        return {**self.request, "hookInstance": str(uuid.uuid4())}

    @property
    def service(self) -> ServiceDefinition:
        """The service for the request's hook: where the example is meant to be sent."""
        return SERVICES_BY_HOOK[Hook(self.request["hook"])]


def load_examples(directory: Path | None = None) -> list[Example]:
    """Every example with its recorded response, sorted by name."""
    directory = directory or data_dir("examples")
    return [
        Example(
            path.stem,
            json.loads(path.read_text(encoding="utf-8")),
            json.loads((directory / "responses" / path.name).read_text(encoding="utf-8")),
        )
        for path in sorted(directory.glob("*.json"))
    ]


def comparable(value: object, base_url: str) -> object:
    """``value`` with every ``uuid`` blanked and links rebased on the recorded base URL.

    uuids are fresh on every call and links follow the server's address; nothing else may differ.
    """
    if isinstance(value, dict):
        return {key: UUID_PLACEHOLDER if key == "uuid" else comparable(child, base_url) for key, child in value.items()}
    if isinstance(value, list):
        return [comparable(child, base_url) for child in value]
    if isinstance(value, str) and value.startswith(base_url):
        return RECORDED_BASE_URL + value.removeprefix(base_url)
    return value
