"""Decoded JSON bodies into pydantic models, with a 400 that names the first bad field."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from cds_service.errors import BadRequest

M = TypeVar("M", bound=BaseModel)


def field_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's location as a JSON path: ``context.draftOrders.entry[0].resource``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def parse_model(model: type[M], body: object) -> M:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = field_path(first["loc"]) or None
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "missing":
            message = f"{field} is required"
        elif field:
            message = f"{field}: {message}"
        raise BadRequest(message, field=field) from None
