"""The Starlette app: routes and the error table, declared as data."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from natrelay.service import Relay
from natrelay.settings import Settings
from natrelay.web import openai_api as oa
from natrelay.web import relay_api as api
from natrelay.web.errors import HANDLERS
from natrelay.web.requests import Right, authorize
from natrelay.wire import Paths

Endpoint = Callable[[Request, Relay], Awaitable[Response]]


def guarded(right: Right, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        relay: Relay = request.app.state.relay
        authorize(request, relay.settings, right)
        return await endpoint(request, relay)

    route.__name__ = endpoint.__name__
    return route


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


PUB, CLI = Right.PUBLISH, Right.CLIENT


def _route(path: str, right: Right, endpoint: Endpoint, method: str) -> Route:
    return Route(Paths.route(path), guarded(right, endpoint), methods=[method])


ROUTES = [
    Route(Paths.HEALTH, healthz),
    _route(Paths.REGISTER, PUB, api.register, "POST"),
    _route(Paths.HEARTBEAT, PUB, api.heartbeat, "POST"),
    _route(Paths.POLL, PUB, api.poll, "POST"),
    _route(Paths.DEREGISTER, PUB, api.deregister, "POST"),
    _route(Paths.TASK_REQUEST, PUB, api.task_request, "GET"),
    _route(Paths.TASK_CHUNKS, PUB, api.post_chunks, "POST"),
    _route(Paths.TASK_RESULT, PUB, api.post_result, "POST"),
    _route(Paths.LLMS, CLI, api.list_llms, "GET"),
    _route(Paths.INFER, CLI, api.infer, "POST"),
    _route(Paths.LLM, CLI, api.get_llm, "GET"),
    _route(Paths.LLM, CLI, api.delete_llm, "DELETE"),
    _route(Paths.TASK, CLI, api.get_task, "GET"),
    _route(Paths.TASK, CLI, api.cancel_task, "DELETE"),
    _route(Paths.TASK_EVENTS, CLI, api.task_events, "GET"),
    _route(Paths.MODELS, CLI, oa.list_models, "GET"),
    _route(Paths.MODEL, CLI, oa.get_model, "GET"),
    _route(Paths.CHAT, CLI, oa.chat_completions, "POST"),
]


def create_app(settings: Settings | None = None, relay: Relay | None = None) -> Starlette:
    """The relay app; the same object serves uvicorn and Mangum."""
    relay = relay or Relay.from_settings(settings)
    app = Starlette(routes=ROUTES, exception_handlers=HANDLERS)
    app.state.relay = relay
    return app
