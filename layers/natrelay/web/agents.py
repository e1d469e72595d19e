"""Calling an agent: its request dressed (system prompt, defaults) for each row that may
serve it, tried in the order service.agents gives, each with its own fallbacks.

The caller's scope is checked on the agent's name (an agent outside it is an unknown
model); the rows behind the agent are the agent's to use, not the caller's to name, so
they are reached with the scope lifted. A row that cannot serve (offline, queue full:
web.fallbacks' rule) hands the request to the next; the answer's
`x-natrelay-served-by` names the row that served. When none can, the refusal keeps its
code but names only the agent (its rows are shown to admins only).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace

from starlette.responses import Response

from natrelay.errors import EndpointNotServedError, RelayError
from natrelay.service import Principal, Relay
from natrelay.store import LlmRecord
from natrelay.web.fallbacks import Serve, cannot_serve, with_fallbacks
from natrelay.wire import Endpoint, Role

# The request for one of the agent's rows, served for a caller (the scope lifted).
ServeFor = Callable[[LlmRecord, Principal], Serve]


async def through_agent(
    relay: Relay,
    principal: Principal,
    agent: LlmRecord,
    endpoint: Endpoint,
    serve_for: ServeFor,
    *,
    queued: bool = False,
    key: str | None = None,
) -> Response:
    """The answer of the first of the agent's rows that can serve the request (`key`:
    its Idempotency-Key, if it has one)."""
    rows = await relay.agents.targets(agent, endpoint, key)
    acting = replace(principal, models=None)
    refused: RelayError | None = None
    for row in rows:
        if queued and row.public:
            continue  # a public row has no task to queue
        try:
            return await with_fallbacks(
                relay, acting, row.name, serve_for(row, acting), queued=queued, row=row
            )
        except EndpointNotServedError as exc:  # its row does not serve this API
            raise _as_agent(exc, agent, principal) from None
        except RelayError as exc:
            if not cannot_serve(exc):
                raise
            refused = refused or exc
    if refused is None:
        raise relay.agents.offline(agent)
    raise _as_agent(refused, agent, principal) from None


def _as_agent(exc: RelayError, agent: LlmRecord, principal: Principal) -> RelayError:
    """The refusal of the agent's rows, as the agent's: its code (and Retry-After) kept,
    its message not naming the rows, which only admins are shown."""
    if principal.role is Role.ADMIN:
        return exc
    hidden = copy.copy(exc)
    hidden.message = (
        f"the agent {agent.name!r} cannot answer now ({exc.code.value}); try again later"
    )
    hidden.args = (hidden.message,)
    return hidden
