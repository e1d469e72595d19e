"""Reading and checking request bodies and credentials."""

from __future__ import annotations

import json
import math
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
    """The body, read no further than the limit: a larger one (chunked or not) is 413
    as soon as it is past the limit, without buffering the rest."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body is {declared} bytes; the limit is {limit} bytes")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes")
    return bytes(body)


# Integers longer than this are refused (Python would refuse past 4300 digits anyway).
MAX_INT_DIGITS = 100


def _not_json(problem: str) -> InvalidRequestError:
    return InvalidRequestError(f"the request body is not valid JSON: {problem}")


def _constant(name: str) -> Any:
    raise _not_json(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _not_json(f"{text} is out of range for a number")
    return value


def _int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _not_json(f"an integer with {digits} digits is out of range")
    return int(text)


def loads(data: bytes) -> Any:
    """Strict JSON (RFC 8259): no NaN or Infinity, numbers in range, bounded nesting;
    InvalidRequestError naming the problem otherwise."""
    try:
        return json.loads(data, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except RecursionError as exc:
        raise _not_json("it is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise _not_json(str(exc)) from exc


async def read_json(request: Request, settings: Settings) -> Any:
    return loads(await read_body(request, settings))


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
