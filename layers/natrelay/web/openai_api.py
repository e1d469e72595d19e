"""The OpenAI-compatible surface under /v1: models, chat completions, completions,
embeddings, responses, and Anthropic's messages."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from natrelay.service import Relay
from natrelay.web.abandon import client_gone
from natrelay.web.chat import idempotency_key, relay_request
from natrelay.web.relay_api import answer
from natrelay.web.requests import caller, read_object
from natrelay.web.views import model_card
from natrelay.wire import Endpoint, ModelList


async def list_models(request: Request, relay: Relay) -> Response:
    rows = await relay.catalog.serving_rows(caller(request))
    catalog = relay.catalog
    return answer(
        ModelList(data=[model_card(r, catalog.status(r), catalog.endpoints(r)) for r in rows])
    )


async def get_model(request: Request, relay: Relay) -> Response:
    row = await relay.catalog.get(caller(request), request.path_params["model"])
    return answer(model_card(row, relay.catalog.status(row), relay.catalog.endpoints(row)))


async def _relay(request: Request, relay: Relay, endpoint: Endpoint) -> Response:
    body = await read_object(request, relay.settings)
    key = idempotency_key(request)
    return await relay_request(
        relay, caller(request), endpoint, body, key, gone=client_gone(request)
    )


async def chat_completions(request: Request, relay: Relay) -> Response:
    return await _relay(request, relay, Endpoint.CHAT)


async def completions(request: Request, relay: Relay) -> Response:
    return await _relay(request, relay, Endpoint.COMPLETIONS)


async def embeddings(request: Request, relay: Relay) -> Response:
    return await _relay(request, relay, Endpoint.EMBEDDINGS)


async def responses(request: Request, relay: Relay) -> Response:
    return await _relay(request, relay, Endpoint.RESPONSES)


async def messages(request: Request, relay: Relay) -> Response:
    """Anthropic's Messages API (its errors are shaped as Anthropic's: web.errors)."""
    return await _relay(request, relay, Endpoint.MESSAGES)
