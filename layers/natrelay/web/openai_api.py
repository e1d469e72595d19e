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
from natrelay.web.views import agent_card, model_card
from natrelay.wire import Endpoint, LlmStatus, ModelList, Role


async def list_models(request: Request, relay: Relay) -> Response:
    """The rows and agents the caller may use that can answer now."""
    principal = caller(request)
    rows = await relay.catalog.serving_rows(principal)
    catalog = relay.catalog
    cards = [model_card(r, catalog.status(r), catalog.endpoints(r)) for r in rows]
    admin = principal.role is Role.ADMIN
    for agent in await relay.agents.all(principal):
        status = await relay.agents.status(agent)
        if status not in (LlmStatus.INACTIVE, LlmStatus.UNAVAILABLE):
            cards.append(agent_card(agent, status, admin=admin))
    return answer(ModelList(data=sorted(cards, key=lambda c: c.id)))


async def get_model(request: Request, relay: Relay) -> Response:
    principal = caller(request)
    row = await relay.catalog.get(principal, request.path_params["model"])
    if row.agent is not None:
        status = await relay.agents.status(row)
        return answer(agent_card(row, status, admin=principal.role is Role.ADMIN))
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
