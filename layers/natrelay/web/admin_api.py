"""Routes for keys, usage and agents: admins manage keys and agents; every key reads its
own usage."""

from __future__ import annotations

import hmac

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from natrelay.errors import ForbiddenError, InvalidRequestError
from natrelay.observe import bind
from natrelay.service import Relay
from natrelay.web import views
from natrelay.web.relay_api import answer
from natrelay.web.requests import caller, read_model
from natrelay.wire import (
    AgentApply,
    AgentApplyResult,
    AgentList,
    KeyLimits,
    KeyList,
    KeySpec,
    Paths,
    Role,
    SecretPut,
    SecretView,
)

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


async def set_key_limits(request: Request, relay: Relay) -> Response:
    limits = await read_model(request, relay.settings, KeyLimits)
    key = await relay.keys.set_limits(request.path_params["key_id"], limits)
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


async def put_secret(request: Request, relay: Relay) -> Response:
    """A public row's API key, where this relay may write it (natrelay dev)."""
    name = request.path_params["name"]
    body = await read_model(request, relay.settings, SecretPut)
    created = await relay.upstreams.put_key(name, body.value)
    return answer(SecretView(name=name, created=created), status=201 if created else 200)


async def list_agents(request: Request, relay: Relay) -> Response:
    agents = relay.agents
    found = await agents.all(caller(request))
    return answer(AgentList(data=[views.agent_view(a, await agents.status(a)) for a in found]))


async def get_agent(request: Request, relay: Relay) -> Response:
    agent = await relay.agents.get(caller(request), request.path_params["name"])
    return answer(views.agent_view(agent, await relay.agents.status(agent)))


async def apply_agents(request: Request, relay: Relay) -> Response:
    """Create or replace agents from documents (admins): all of them, or none."""
    req = await read_model(request, relay.settings, AgentApply)
    return answer(AgentApplyResult(data=await relay.agents.apply(list(req.documents))))


async def delete_agent(request: Request, relay: Relay) -> Response:
    await relay.agents.delete(request.path_params["name"])
    return Response(status_code=204)


async def metrics(request: Request) -> Response:
    """Prometheus exposition (server mode): for the metrics token or an admin key."""
    relay: Relay = request.app.state.relay
    bind(route=Paths.METRICS)
    token = relay.settings.metrics_token.get_secret_value()
    header = request.headers.get("authorization", "")
    given = header.partition(" ")[2].strip().encode("utf-8", "replace")
    if not (token and hmac.compare_digest(given, token.encode())):
        principal = await relay.access.authenticate(header)
        bind(keyId=principal.key_id)
        if principal.role is not Role.ADMIN:
            raise ForbiddenError("metrics are for admins (or the metrics token)")
    body = relay.metrics.exposition()
    if body is None:
        raise HTTPException(404, "metrics are off here: set NATRELAY_METRICS=prometheus")
    return Response(body, media_type="text/plain; version=0.0.4")
