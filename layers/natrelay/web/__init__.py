"""The Starlette app: routes and the error table, declared as data.

Who may call what: `PUBLISHERS` (publisher keys) the publisher protocol, on their
own sessions only; `CLIENTS` (client and admin keys) the models in their scope and
their own tasks and usage; `ADMINS` keys, row deletion and everyone's usage.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from natrelay.errors import ForbiddenError
from natrelay.observe import bind, configure_logging
from natrelay.service import Relay
from natrelay.settings import Settings
from natrelay.web import admin_api as admin
from natrelay.web import openai_api as oa
from natrelay.web import relay_api as api
from natrelay.web.doorbell import doorbell_socket
from natrelay.web.errors import HANDLERS
from natrelay.web.middleware import RequestContext
from natrelay.wire import Paths, Role

Endpoint = Callable[[Request, Relay], Awaitable[Response]]

PUBLISHERS = frozenset({Role.PUBLISHER})
CLIENTS = frozenset({Role.CLIENT, Role.ADMIN})
ADMINS = frozenset({Role.ADMIN})
ANYONE = frozenset(Role)


def guarded(
    path: str, roles: frozenset[Role], endpoint: Endpoint
) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        relay: Relay = request.app.state.relay
        bind(route=path)
        principal = await relay.access.authenticate(request.headers.get("authorization"))
        bind(keyId=principal.key_id)
        if principal.role not in roles:
            needed = " or ".join(sorted(r.value for r in roles))
            raise ForbiddenError(f"this is a {principal.role.value} key; this needs {needed}")
        request.state.principal = principal
        return await endpoint(request, relay)

    route.__name__ = endpoint.__name__
    return route


async def healthz(request: Request) -> Response:
    bind(route=Paths.HEALTH)
    return JSONResponse({"status": "ok"})


def _route(path: str, roles: frozenset[Role], endpoint: Endpoint, method: str) -> Route:
    return Route(Paths.route(path), guarded(path, roles, endpoint), methods=[method])


ROUTES = [
    Route(Paths.HEALTH, healthz),
    Route(Paths.METRICS, admin.metrics),
    _route(Paths.REGISTER, PUBLISHERS, api.register, "POST"),
    _route(Paths.HEARTBEAT, PUBLISHERS, api.heartbeat, "POST"),
    _route(Paths.POLL, PUBLISHERS, api.poll, "POST"),
    _route(Paths.CLAIM, PUBLISHERS, api.claim, "POST"),
    # Checks its caller itself (a publisher key and its own session): see web.doorbell.
    WebSocketRoute(Paths.DOORBELL, doorbell_socket),
    _route(Paths.DEREGISTER, PUBLISHERS, api.deregister, "POST"),
    _route(Paths.TASK_REQUEST, PUBLISHERS, api.task_request, "GET"),
    _route(Paths.TASK_CHUNKS, PUBLISHERS, api.post_chunks, "POST"),
    _route(Paths.TASK_RESULT, PUBLISHERS, api.post_result, "POST"),
    _route(Paths.LLMS, CLIENTS, api.list_llms, "GET"),
    _route(Paths.INFER, CLIENTS, api.infer, "POST"),
    _route(Paths.LLM, CLIENTS, api.get_llm, "GET"),
    _route(Paths.LLM, ADMINS, api.delete_llm, "DELETE"),
    _route(Paths.TASK, CLIENTS, api.get_task, "GET"),
    _route(Paths.TASK, CLIENTS, api.cancel_task, "DELETE"),
    _route(Paths.TASK_EVENTS, CLIENTS, api.task_events, "GET"),
    _route(Paths.KEYS, ADMINS, admin.create_key, "POST"),
    _route(Paths.KEYS, ADMINS, admin.list_keys, "GET"),
    _route(Paths.KEY, ADMINS, admin.get_key, "GET"),
    _route(Paths.KEY, ADMINS, admin.revoke_key, "DELETE"),
    _route(Paths.KEY_USAGE, ADMINS, admin.key_usage, "GET"),
    _route(Paths.USAGE, ANYONE, admin.own_usage, "GET"),
    _route(Paths.MODELS, CLIENTS, oa.list_models, "GET"),
    _route(Paths.MODEL, CLIENTS, oa.get_model, "GET"),
    _route(Paths.CHAT, CLIENTS, oa.chat_completions, "POST"),
]


def create_app(settings: Settings | None = None, relay: Relay | None = None) -> Starlette:
    """The relay app; the same object serves uvicorn and Mangum."""
    relay = relay or Relay.from_settings(settings)
    configure_logging(relay.settings.log_format, relay.settings.log_level)
    app = Starlette(
        routes=ROUTES,
        exception_handlers=HANDLERS,
        middleware=[Middleware(RequestContext, metrics=relay.metrics)],
    )
    app.state.relay = relay
    return app
