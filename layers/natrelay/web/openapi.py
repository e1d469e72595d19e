"""The OpenAPI document of the relay, generated from the routes' declarations and the
wire models, so the document cannot drift from what the relay reads and answers."""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from natrelay import __version__
from natrelay.wire import ErrorBody, Role

REF = "#/components/schemas/{model}"
JSON = "application/json"
SSE = "text/event-stream"
# Request headers and query parameters a route may read, as OpenAPI parameters.
PARAMETERS: dict[str, dict[str, Any]] = {
    "Idempotency-Key": {
        "in": "header",
        "description": "Same key from the same client key within the result retention: "
        "the first request's answer, nothing runs again",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    },
    "Prefer": {
        "in": "header",
        "description": "`respond-async`: answer 202 with the task at once",
        "schema": {"type": "string"},
    },
    "Last-Event-ID": {
        "in": "header",
        "description": "`<seq>:<index>` of the last event seen: resume after it",
        "schema": {"type": "string"},
    },
    "after": {"in": "query", "description": "as Last-Event-ID", "schema": {"type": "string"}},
    "days": {"in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 400}},
    "X-Natrelay-Session": {
        "in": "header",
        "description": "the claiming session (kept out of URLs, and so out of access logs)",
        "schema": {"type": "string"},
    },
    "providerSessionId": {
        "in": "query",
        "description": "the claiming session, as older publishers send it: prefer the header",
        "deprecated": True,
        "schema": {"type": "string"},
    },
}


@dataclass(frozen=True)
class Operation:
    """One route: who may call it, what it reads and what it answers."""

    method: str
    path: str
    roles: frozenset[Role]
    endpoint: Callable[..., Awaitable[Response]]
    summary: str
    body: type[BaseModel] | None = None
    # What a success carries: a wire model, or None for a JSON object passed through
    # (a chat answer) — and `stream` if it may be server-sent events instead.
    answer: type[BaseModel] | None = None
    status: int = 200
    stream: bool = False
    params: tuple[str, ...] = ()
    # Other successes, by status.
    also: dict[int, type[BaseModel]] = field(default_factory=dict)


def _schemas(operations: list[Operation]) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Any]] = [(ErrorBody, "serialization")]
    for op in operations:
        if op.body is not None:
            models.append((op.body, "validation"))
        for answer in (op.answer, *op.also.values()):
            if answer is not None:
                models.append((answer, "serialization"))
    refs, defs = models_json_schema(list(dict.fromkeys(models)), ref_template=REF, by_alias=True)
    return {"refs": refs, "defs": defs.get("$defs", {})}


def _content(schema: dict[str, Any], stream: bool = False) -> dict[str, Any]:
    content = {JSON: {"schema": schema}}
    if stream:
        content[SSE] = {"schema": {"type": "string"}}
    return content


def document(operations: list[Operation], public: list[str]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `operations`; `public` paths need no bearer key."""
    generated = _schemas(operations)
    refs = generated["refs"]
    error = {
        "description": "an OpenAI-style error",
        "content": _content(refs[(ErrorBody, "serialization")]),
    }
    paths: dict[str, dict[str, Any]] = {
        path: {
            "get": {
                "summary": "no key needed",
                "security": [],
                "responses": {
                    "200": {"description": "ok", "content": _content({"type": "object"})}
                },
            }
        }
        for path in public
    }
    for op in operations:
        success: dict[str, Any] = {"description": "success"}
        if op.status != 204:
            schema = refs[(op.answer, "serialization")] if op.answer else {"type": "object"}
            success["content"] = _content(schema, op.stream)
        spec: dict[str, Any] = {
            "summary": op.summary,
            "description": "Roles: " + ", ".join(sorted(r.value for r in op.roles)),
            "operationId": f"{op.method.lower()}_{op.endpoint.__name__}",
            "responses": {str(op.status): success, "default": error},
        }
        for status, model in op.also.items():
            schema = refs[(model, "serialization")]
            spec["responses"][str(status)] = {"description": "success", "content": _content(schema)}
        names = re.findall(r"{(\w+)}", op.path)
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
        ]
        params += [{"name": name, **PARAMETERS[name]} for name in op.params]
        if params:
            spec["parameters"] = params
        if op.body is not None:
            body = refs[(op.body, "validation")]
            spec["requestBody"] = {"required": True, "content": _content(body)}
        paths.setdefault(op.path, {})[op.method.lower()] = spec
    return {
        "openapi": "3.1.0",
        "info": {"title": "natrelay", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": generated["defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def openapi_endpoint(
    operations: list[Operation], public: list[str]
) -> Callable[[Request], Awaitable[Response]]:
    """The route that serves the document of `operations`, built on its first request
    (building it builds every model's schema: not a cost for a cold start to pay)."""

    @functools.cache
    def built() -> dict[str, Any]:
        return document(operations, public)

    async def openapi(request: Request) -> Response:
        return JSONResponse(built())

    return openapi
