"""The OpenAI-compatible surface under /v1: models and chat completions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from natrelay.service import Relay
from natrelay.web.chat import idempotency_key, run_chat
from natrelay.web.relay_api import answer
from natrelay.web.requests import caller, read_object
from natrelay.web.views import model_card
from natrelay.wire import ModelList


async def list_models(request: Request, relay: Relay) -> Response:
    rows = await relay.catalog.serving_rows(caller(request))
    return answer(ModelList(data=[model_card(r, relay.catalog.status(r)) for r in rows]))


async def get_model(request: Request, relay: Relay) -> Response:
    row = await relay.catalog.get(caller(request), request.path_params["model"])
    return answer(model_card(row, relay.catalog.status(row)))


async def chat_completions(request: Request, relay: Relay) -> Response:
    body = await read_object(request, relay.settings)
    return await run_chat(relay, caller(request), body, idempotency_key(request))
