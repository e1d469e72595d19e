"""The Starlette app: routes and the error table, declared as data."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from natrelay.service import RelayService
from natrelay.settings import Settings
from natrelay.web import openai_api as oa
from natrelay.web import relay_api as api
from natrelay.web.errors import HANDLERS
from natrelay.web.requests import Right, authorize

Endpoint = Callable[[Request, RelayService], Awaitable[Response]]


def guarded(right: Right, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        service: RelayService = request.app.state.service
        authorize(request, service.settings, right)
        return await endpoint(request, service)

    route.__name__ = endpoint.__name__
    return route


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


PUB, CLI = Right.PUBLISH, Right.CLIENT
_PROVIDER = "/api/v1/llms/_provider"
_TASK = "/api/v1/llms/_provider-task/{task_id}"

ROUTES = [
    Route("/healthz", healthz),
    Route(f"{_PROVIDER}-register", guarded(PUB, api.register), methods=["POST"]),
    Route(f"{_PROVIDER}-heartbeat", guarded(PUB, api.heartbeat), methods=["POST"]),
    Route(f"{_PROVIDER}-poll", guarded(PUB, api.poll), methods=["POST"]),
    Route(f"{_PROVIDER}-deregister", guarded(PUB, api.deregister), methods=["POST"]),
    Route(f"{_TASK}/request", guarded(PUB, api.task_request), methods=["GET"]),
    Route(f"{_TASK}/chunks", guarded(PUB, api.post_chunks), methods=["POST"]),
    Route(f"{_TASK}/result", guarded(PUB, api.post_result), methods=["POST"]),
    Route("/api/v1/llms", guarded(CLI, api.list_llms), methods=["GET"]),
    Route("/api/v1/llms/{name:path}/infer", guarded(CLI, api.infer), methods=["POST"]),
    Route("/api/v1/llms/{name:path}", guarded(CLI, api.get_llm), methods=["GET"]),
    Route("/api/v1/llms/{name:path}", guarded(CLI, api.delete_llm), methods=["DELETE"]),
    Route("/api/v1/tasks/{task_id}", guarded(CLI, api.get_task), methods=["GET"]),
    Route("/api/v1/tasks/{task_id}", guarded(CLI, api.cancel_task), methods=["DELETE"]),
    Route("/api/v1/tasks/{task_id}/events", guarded(CLI, api.task_events_route), methods=["GET"]),
    Route("/v1/models", guarded(CLI, oa.list_models), methods=["GET"]),
    Route("/v1/models/{model:path}", guarded(CLI, oa.get_model), methods=["GET"]),
    Route("/v1/chat/completions", guarded(CLI, oa.chat_completions), methods=["POST"]),
]


def create_app(settings: Settings | None = None, service: RelayService | None = None) -> Starlette:
    """The relay app; the same object serves uvicorn and Mangum."""
    service = service or RelayService.from_settings(settings)
    app = Starlette(routes=ROUTES, exception_handlers=HANDLERS)
    app.state.service = service
    return app


def run_sweep_once(settings: Settings | None = None) -> dict[str, int]:
    """One sweep with settings from the environment (for `natrelay dev` and the sweeper)."""
    return asyncio.run(RelayService.from_settings(settings).sweep())
