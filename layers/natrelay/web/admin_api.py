"""Routes for keys and usage: admins manage keys; every key reads its own usage."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from natrelay.errors import InvalidRequestError
from natrelay.service import Relay
from natrelay.web import views
from natrelay.web.relay_api import answer
from natrelay.web.requests import caller, read_model
from natrelay.wire import KeyList, KeySpec

MAX_USAGE_DAYS = 400


def _days(request: Request) -> int:
    raw = request.query_params.get("days", "7")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_USAGE_DAYS:
        raise InvalidRequestError(
            f"days must be a whole number from 1 to {MAX_USAGE_DAYS}", param="days"
        )
    return int(raw)


async def create_key(request: Request, relay: Relay) -> Response:
    spec = await read_model(request, relay.settings, KeySpec)
    key, secret = await relay.keys.create(spec)
    return answer(views.key_created(key, secret, relay.clock()), status=201)


async def list_keys(request: Request, relay: Relay) -> Response:
    now = relay.clock()
    return answer(KeyList(data=[views.key_view(k, now) for k in await relay.keys.all()]))


async def get_key(request: Request, relay: Relay) -> Response:
    key = await relay.keys.get(request.path_params["key_id"])
    return answer(views.key_view(key, relay.clock()))


async def revoke_key(request: Request, relay: Relay) -> Response:
    key = await relay.keys.revoke(request.path_params["key_id"])
    return answer(views.key_view(key, relay.clock()))


async def key_usage(request: Request, relay: Relay) -> Response:
    days = _days(request)
    key = await relay.keys.get(request.path_params["key_id"])
    return answer(views.usage_view(key.id, await relay.usage.days(key.id, days)))


async def own_usage(request: Request, relay: Relay) -> Response:
    days = _days(request)
    key_id = caller(request).key_id
    return answer(views.usage_view(key_id, await relay.usage.days(key_id, days)))
