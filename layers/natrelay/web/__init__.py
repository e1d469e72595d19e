"""The Starlette app: routes and the error table, declared as data.

Who may call what: `PUBLISHERS` (publisher keys) the publisher protocol, on their
own sessions only; `CLIENTS` (client and admin keys) the models in their scope (agents
included) and their own tasks and usage; `ADMINS` keys, rows (apply, delete), agents
(list, get, apply, delete) and everyone's usage, and the console (its own login: see
web.console.pages).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from natrelay.errors import ForbiddenError
from natrelay.observe import bind
from natrelay.service import Relay
from natrelay.service.assembly import build_relay
from natrelay.service.dispatch import routed
from natrelay.service.sweep import sweep_every
from natrelay.settings import Settings
from natrelay.web import admin_api as admin
from natrelay.web import openai_api as oa
from natrelay.web import relay_api as api
from natrelay.web.chat import InferRequest
from natrelay.web.console import keys as console_keys
from natrelay.web.console import latency, overview, pages, recent, usage
from natrelay.web.console import rows as console_rows
from natrelay.web.doorbell import doorbell_socket
from natrelay.web.endpoints import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    MessageRequest,
    ResponseRequest,
)
from natrelay.web.errors import HANDLERS
from natrelay.web.hosts import host_guard
from natrelay.web.middleware import RequestContext
from natrelay.web.openapi import Operation, openapi_endpoint
from natrelay.wire import (
    CONVERSATION_HEADER,
    PRIORITY_HEADER,
    SESSION_HEADER,
    AgentApply,
    AgentApplyResult,
    AgentList,
    AgentView,
    ApplyResult,
    ChunkAck,
    ChunkBatch,
    HeartbeatRequest,
    KeyCreated,
    KeyLimits,
    KeyList,
    KeySpec,
    KeyView,
    LlmApply,
    LlmList,
    LlmRow,
    ModelCard,
    ModelList,
    Paths,
    PollRequest,
    PollResponse,
    RegisterRequest,
    Role,
    SecretPut,
    SecretView,
    SessionRequest,
    SessionResponse,
    TaskResult,
    TaskView,
    UsageView,
)

Endpoint = Callable[[Request, Relay], Awaitable[Response]]

PUBLISHERS = frozenset({Role.PUBLISHER})
CLIENTS = frozenset({Role.CLIENT, Role.ADMIN})
ADMINS = frozenset({Role.ADMIN})
ANYONE = frozenset(Role)


# Where the key may also come as `x-api-key` (how the anthropic SDK may send it).
API_KEY_HEADER_PATHS = frozenset({Paths.MESSAGES})


def _credentials(request: Request, path: str) -> str | None:
    """The Authorization header; on API_KEY_HEADER_PATHS, an `x-api-key` as a bearer."""
    authorization = request.headers.get("authorization")
    if authorization is None and path in API_KEY_HEADER_PATHS:
        key = request.headers.get("x-api-key")
        return f"Bearer {key}" if key is not None else None
    return authorization


def guarded(
    path: str, roles: frozenset[Role], endpoint: Endpoint
) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        relay: Relay = request.app.state.relay
        bind(route=path)
        principal = await relay.access.authenticate(_credentials(request, path))
        bind(keyId=principal.key_id)
        if principal.role not in roles:
            needed = " or ".join(sorted(r.value for r in roles))
            raise ForbiddenError(f"this is a {principal.role.value} key; this needs {needed}")
        request.state.principal = routed(
            principal,
            request.headers.get(PRIORITY_HEADER),
            # a publisher's routes name its session in this header: not a conversation
            request.headers.get(CONVERSATION_HEADER)
            if principal.role is not Role.PUBLISHER
            else None,
        )
        return await endpoint(request, relay)

    route.__name__ = endpoint.__name__
    return route


async def healthz(request: Request) -> Response:
    bind(route=Paths.HEALTH)
    return JSONResponse({"status": "ok"})


def _op(
    method: str,
    path: str,
    roles: frozenset[Role],
    endpoint: Endpoint,
    summary: str,
    **kw: Any,
) -> Operation:
    return Operation(method, path, roles, endpoint, summary, **kw)


ONCE = ("Idempotency-Key",)
OPERATIONS = [
    _op("POST", Paths.REGISTER, PUBLISHERS, api.register, "register providers",
        body=RegisterRequest, answer=SessionResponse),
    _op("POST", Paths.HEARTBEAT, PUBLISHERS, api.heartbeat, "heartbeat",
        body=HeartbeatRequest, answer=SessionResponse),
    _op("POST", Paths.POLL, PUBLISHERS, api.poll, "long-poll for tasks",
        body=PollRequest, answer=PollResponse),
    _op("POST", Paths.CLAIM, PUBLISHERS, api.claim, "claim tasks at once (never waits)",
        body=PollRequest, answer=PollResponse),
    _op("POST", Paths.DEREGISTER, PUBLISHERS, api.deregister, "deregister",
        body=SessionRequest, answer=SessionResponse),
    _op("GET", Paths.TASK_REQUEST, PUBLISHERS, api.task_request, "a claimed task's request",
        params=(SESSION_HEADER, "providerSessionId")),
    _op("POST", Paths.TASK_CHUNKS, PUBLISHERS, api.post_chunks, "post a chunk batch",
        body=ChunkBatch, answer=ChunkAck),
    _op("POST", Paths.TASK_RESULT, PUBLISHERS, api.post_result, "post a task's result",
        body=TaskResult, answer=TaskView),
    _op("GET", Paths.LLMS, CLIENTS, api.list_llms, "LLM rows", answer=LlmList),
    _op("POST", Paths.INFER, CLIENTS, api.infer, "a chat request for this LLM",
        body=InferRequest, stream=True, params=(*ONCE, "Prefer"), also={202: TaskView}),
    _op("GET", Paths.LLM, CLIENTS, api.get_llm, "an LLM row", answer=LlmRow),
    _op("DELETE", Paths.LLM, ADMINS, api.delete_llm, "delete a row, release its name",
        status=204),
    _op("POST", Paths.LLMS_APPLY, ADMINS, api.apply_llms, "create or change rows (all or none)",
        body=LlmApply, answer=ApplyResult),
    _op("GET", Paths.TASK, CLIENTS, api.get_task, "a task", answer=TaskView),
    _op("DELETE", Paths.TASK, CLIENTS, api.cancel_task, "cancel a task", answer=TaskView),
    _op("GET", Paths.TASK_EVENTS, CLIENTS, api.task_events, "a task's chunks as SSE",
        answer=None, stream=True, params=("Last-Event-ID", "after")),
    _op("GET", Paths.AGENTS, ADMINS, admin.list_agents, "agents", answer=AgentList),
    _op("POST", Paths.AGENTS_APPLY, ADMINS, admin.apply_agents,
        "create or replace agents (all or none)", body=AgentApply, answer=AgentApplyResult),
    _op("GET", Paths.AGENT, ADMINS, admin.get_agent, "an agent", answer=AgentView),
    _op("DELETE", Paths.AGENT, ADMINS, admin.delete_agent, "delete an agent, release its name",
        status=204),
    _op("POST", Paths.KEYS, ADMINS, admin.create_key, "create a key",
        body=KeySpec, answer=KeyCreated, status=201),
    _op("GET", Paths.KEYS, ADMINS, admin.list_keys, "keys", answer=KeyList),
    _op("GET", Paths.KEY, ADMINS, admin.get_key, "a key", answer=KeyView),
    _op("PATCH", Paths.KEY, ADMINS, admin.set_key_limits,
        "change a key's limits (all three: one left out is unlimited)",
        body=KeyLimits, answer=KeyView),
    _op("DELETE", Paths.KEY, ADMINS, admin.revoke_key, "revoke a key", answer=KeyView),
    _op("GET", Paths.KEY_USAGE, ADMINS, admin.key_usage, "a key's usage",
        answer=UsageView, params=("days",)),
    _op("GET", Paths.USAGE, ANYONE, admin.own_usage, "the calling key's usage",
        answer=UsageView, params=("days",)),
    _op("PUT", Paths.SECRET, ADMINS, admin.put_secret,
        "create or change a public row's API key (where the relay may write secrets)",
        body=SecretPut, answer=SecretView, also={201: SecretView}),
    _op("GET", Paths.MODELS, CLIENTS, oa.list_models, "models", answer=ModelList),
    _op("GET", Paths.MODEL, CLIENTS, oa.get_model, "a model", answer=ModelCard),
    _op("POST", Paths.CHAT, CLIENTS, oa.chat_completions, "chat completions",
        body=ChatRequest, stream=True, params=ONCE),
    _op("POST", Paths.COMPLETIONS, CLIENTS, oa.completions, "completions (legacy)",
        body=CompletionRequest, stream=True, params=ONCE),
    _op("POST", Paths.EMBEDDINGS, CLIENTS, oa.embeddings, "embeddings",
        body=EmbeddingRequest, params=ONCE),
    _op("POST", Paths.RESPONSES, CLIENTS, oa.responses, "responses (stateless)",
        body=ResponseRequest, stream=True, params=ONCE),
    _op("POST", Paths.MESSAGES, CLIENTS, oa.messages,
        "Anthropic messages (the key also as x-api-key; errors Anthropic-shaped)",
        body=MessageRequest, stream=True, params=ONCE),
]  # fmt: skip


@dataclass(frozen=True)
class Page:
    """A console page: HTML for a browser with a live page session of `roles`; a POST
    also carries the session's CSRF token (web.console.pages.guarded_page)."""

    method: str
    path: str
    roles: frozenset[Role]
    endpoint: pages.PageEndpoint
    form_limit: int = pages.MAX_FORM_BYTES


PAGES = [
    Page("GET", Paths.CONSOLE, ADMINS, overview.overview),
    Page("GET", Paths.CONSOLE_USAGE, ADMINS, usage.usage),
    Page("GET", Paths.CONSOLE_LATENCY, ADMINS, latency.latency),
    Page("GET", Paths.CONSOLE_REQUESTS, ADMINS, recent.requests),
    Page("GET", Paths.CONSOLE_REQUEST, ADMINS, recent.request),
    Page("GET", Paths.CONSOLE_KEYS, ADMINS, console_keys.keys),
    Page("POST", Paths.CONSOLE_KEYS, ADMINS, console_keys.create),
    Page("POST", Paths.CONSOLE_KEY_LIMITS, ADMINS, console_keys.limits),
    Page("POST", Paths.CONSOLE_KEY_REVOKE, ADMINS, console_keys.revoke),
    Page("GET", Paths.CONSOLE_ROWS, ADMINS, console_rows.rows),
    Page("POST", Paths.CONSOLE_ROWS, ADMINS, console_rows.apply, pages.MAX_YAML_BYTES),
    Page("POST", Paths.CONSOLE_ROW_DELETE, ADMINS, console_rows.delete),
    Page("POST", Paths.CONSOLE_LOGOUT, ADMINS, pages.logout),
]
ROUTES = [
    Route(Paths.HEALTH, healthz),
    Route(Paths.METRICS, admin.metrics),
    # HTML for browsers, with its own login (a page session): see web.console.pages.
    Route(Paths.CONSOLE_LOGIN, pages.login_page, methods=["GET"]),
    Route(Paths.CONSOLE_LOGIN, pages.login, methods=["POST"]),
    Route(Paths.STATUS, pages.to_console, methods=["GET"]),
    *(
        Route(
            page.path,
            pages.guarded_page(page.path, page.roles, page.endpoint, form_limit=page.form_limit),
            methods=[page.method],
        )
        for page in PAGES
    ),
    Route(Paths.OPENAPI, openapi_endpoint(OPERATIONS, public=[Paths.HEALTH, Paths.OPENAPI])),
    *(
        Route(Paths.route(op.path), guarded(op.path, op.roles, op.endpoint), methods=[op.method])
        for op in OPERATIONS
    ),
    # Checks its caller itself (a publisher key and its own session): see web.doorbell.
    WebSocketRoute(Paths.DOORBELL, doorbell_socket),
]


def create_app(settings: Settings | None = None, relay: Relay | None = None) -> Starlette:
    """The relay app; the same object serves uvicorn and Mangum. Without `relay`, the
    relay the settings describe (service.assembly), as a process of its own."""
    relay = relay or build_relay(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        sweeping = None
        if relay.sweep_seconds > 0:
            sweeping = asyncio.ensure_future(sweep_every(relay.sweeper, relay.sweep_seconds))
        try:
            yield
        finally:
            if sweeping is not None:
                sweeping.cancel()
                await asyncio.gather(sweeping, return_exceptions=True)
            await relay.drain()  # what this process writes behind its answers, first
            relay.tracing.flush()

    app = Starlette(
        routes=ROUTES,
        exception_handlers=HANDLERS,
        middleware=[
            Middleware(RequestContext, metrics=relay.metrics, tracing=relay.tracing),
            *host_guard(relay.settings.allowed_hosts),
        ],
        lifespan=lifespan,
    )
    app.state.relay = relay
    return app
