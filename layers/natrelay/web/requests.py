"""Reading and checking request bodies and credentials."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from natrelay.errors import InvalidRequestError, PayloadTooLargeError
from natrelay.service import Principal
from natrelay.settings import Settings

M = TypeVar("M", bound=BaseModel)


def caller(request: Request) -> Principal:
    """Who sent the request (set by the route's guard)."""
    principal: Principal = request.state.principal
    return principal


async def read_body(request: Request, settings: Settings) -> bytes:
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body is {declared} bytes; the limit is {limit} bytes")
    body = await request.body()
    if len(body) > limit:
        raise PayloadTooLargeError(f"request body is {len(body)} bytes; the limit is {limit} bytes")
    return body


async def read_json(request: Request, settings: Settings) -> Any:
    body = await read_body(request, settings)
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}") from exc


def parse(model: type[M], data: Any) -> M:
    """Validate into `model`; the first error names its field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        where = f"{field}: " if field else ""
        raise InvalidRequestError(f"{where}{first['msg']}", param=field) from exc


async def read_object(request: Request, settings: Settings) -> dict[str, Any]:
    """The body as a JSON object (400 for anything else)."""
    body = await read_json(request, settings)
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    return body


async def read_model(request: Request, settings: Settings, model: type[M]) -> M:
    return parse(model, await read_json(request, settings))
