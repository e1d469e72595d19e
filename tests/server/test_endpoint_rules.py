"""The service's rules for endpoints and aliases, in process (moto): a request for an
endpoint wakes and queues like chat, a pool serves what every live member serves, an
alias resolves only to its owner's row."""

from __future__ import annotations

import pytest

from natrelay.errors import (
    EndpointNotServedError,
    LlmNotFoundError,
    NameOwnedError,
    PublisherOfflineError,
)
from natrelay.service import Principal, Relay
from natrelay.web import views
from natrelay.wire import (
    Endpoint,
    LlmStatus,
    ProviderSpec,
    RegisterRequest,
    Role,
    SessionRequest,
    TaskKind,
)
from tests.server.conftest import CLIENT, PUB, FakeClock, claim, register
from tests.server.test_fast_path import polling

pytestmark = pytest.mark.anyio

EMBED = {"model": "e", "input": ["a", "b"], "dimensions": 3}
OTHER_PUB = Principal(key_id="pub-b", role=Role.PUBLISHER)


def spec(name: str, *endpoints: Endpoint, **fields: object) -> ProviderSpec:
    return ProviderSpec.model_validate(
        {"name": name, "type": "echo", "model": "echo", "endpoints": endpoints or None, **fields}
    )


async def test_an_endpoint_request_wakes_a_hibernating_pool_and_carries_its_endpoint(
    relay: Relay,
) -> None:
    sleepy = spec("e", Endpoint.EMBEDDINGS, initialStatus="hibernating", wakeMaxWaitSeconds=30)
    sid = await register(relay, sleepy)
    task = await relay.queue.submit(CLIENT, "e", EMBED, stream=False, endpoint=Endpoint.EMBEDDINGS)
    assert task.wake_id is not None and task.endpoint == "embeddings"
    wake, infer = await claim(relay, sid)
    assert (wake.kind, infer.kind) == (TaskKind.WAKE, TaskKind.INFER)
    assert wake.endpoint == "chat"  # (a wake is no request: the field says nothing)
    assert (infer.endpoint, infer.request, infer.wake_id) == ("embeddings", EMBED, task.wake_id)


async def test_a_pool_serves_what_every_live_member_serves(relay: Relay, clock: FakeClock) -> None:
    await register(relay, spec("p", Endpoint.CHAT, Endpoint.EMBEDDINGS, Endpoint.MESSAGES))
    row = await relay.catalog.get(CLIENT, "p")
    assert relay.catalog.endpoints(row) == {"chat", "embeddings", "messages"}
    await register(relay, spec("p", Endpoint.EMBEDDINGS, Endpoint.CHAT))
    row = await relay.catalog.get(CLIENT, "p")
    assert relay.catalog.endpoints(row) == {"chat", "embeddings"}
    with pytest.raises(EndpointNotServedError, match="does not serve /v1/messages"):
        await relay.queue.submit(
            CLIENT, "p", {"model": "p"}, stream=False, endpoint=Endpoint.MESSAGES
        )
    # once the second member is gone (its heartbeat too old), the first serves alone
    clock.advance(relay.settings.heartbeat_timeout_seconds + 1)
    first = await register(relay, spec("p", Endpoint.CHAT, Endpoint.EMBEDDINGS, Endpoint.MESSAGES))
    row = await relay.catalog.get(CLIENT, "p")
    assert relay.catalog.endpoints(row) == {"chat", "embeddings", "messages"}
    task = await relay.queue.submit(
        CLIENT, "p", {"model": "p"}, stream=False, endpoint=Endpoint.MESSAGES
    )
    [polled] = await claim(relay, first)
    assert (polled.id, polled.endpoint) == (task.id, "messages")


async def test_an_alias_resolves_to_its_row_and_only_while_declared(relay: Relay) -> None:
    sid = await register(relay, spec("r", aliases=["r-alias"]))
    assert (await relay.catalog.get(CLIENT, "r-alias")).name == "r"
    task = await relay.queue.submit(
        CLIENT, "r-alias", {"model": "r-alias", "messages": [{}]}, stream=False
    )
    assert task.llm == "r"
    # another key cannot claim it, as a name or as an alias
    for other in (spec("r-alias"), spec("s", aliases=["r-alias"]), spec("s", aliases=["r"])):
        with pytest.raises(NameOwnedError):
            await relay.sessions.register(OTHER_PUB, RegisterRequest(providers=[other]))
    # the owner's registration without it: it no longer resolves
    await relay.sessions.register(
        PUB, RegisterRequest(providers=[spec("r")], provider_session_id=sid)
    )
    with pytest.raises(LlmNotFoundError):
        await relay.catalog.get(CLIENT, "r-alias")
    assert (await relay.catalog.get(CLIENT, "r")).aliases == ()


async def test_a_client_scope_is_checked_against_the_rows_own_name(relay: Relay) -> None:
    await register(relay, spec("r", aliases=["r-alias"]), spec("secret", aliases=["public"]))
    scoped = Principal(key_id="c-scoped", role=Role.CLIENT, models=("r",))
    assert (await relay.catalog.get(scoped, "r-alias")).name == "r"
    with pytest.raises(LlmNotFoundError):
        await relay.catalog.get(scoped, "public")  # an alias of a model out of scope


async def test_an_inactive_pool_is_offline_before_any_endpoint_check(relay: Relay) -> None:
    await register(relay, spec("gone", Endpoint.EMBEDDINGS, initialStatus=LlmStatus.INACTIVE))
    with pytest.raises(PublisherOfflineError):
        await relay.queue.submit(CLIENT, "gone", EMBED, stream=False, endpoint=Endpoint.MESSAGES)


async def test_a_name_the_key_publishes_is_no_longer_its_alias(relay: Relay) -> None:
    await register(relay, spec("r", aliases=["x"]))
    await register(relay, spec("x"))  # another session of the key publishes `x` itself
    assert (await relay.catalog.get(CLIENT, "x")).name == "x"
    scoped = Principal(key_id="c-scoped", role=Role.CLIENT, models=("r",))
    with pytest.raises(LlmNotFoundError):
        await relay.catalog.get(scoped, "x")  # not `r` by the back door


async def test_a_handed_request_keeps_its_endpoint_in_memory_and_when_spilled(
    relay: Relay,
) -> None:
    """The fast path (service.local_polls) hands the endpoint to the poll, and a task it
    writes back to the queue (its publisher left) keeps it."""
    sid = await register(relay, spec("e", Endpoint.EMBEDDINGS))
    async with polling(relay, sid) as got:
        task = await relay.queue.submit(
            CLIENT, "e", EMBED, stream=False, endpoint=Endpoint.EMBEDDINGS
        )
        [handed] = await got()
    assert handed.id == task.id and views.polled_task(handed).endpoint == "embeddings"
    second = await register(relay, spec("e", Endpoint.EMBEDDINGS))
    await relay.sessions.deregister(PUB, SessionRequest(provider_session_id=sid))
    [again] = await claim(relay, second)
    assert (again.id, again.endpoint, again.request) == (task.id, "embeddings", EMBED)
