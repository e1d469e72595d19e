"""Authentication's cost under a flood (the streaming Function URL is public): malformed
keys are refused before any DynamoDB read, an unknown key id is read once in a while,
and made-up ids never push real keys out of the cache."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from natrelay.errors import AuthError
from natrelay.service import Relay, access
from natrelay.service.access import new_key_secret
from natrelay.wire import KeySpec, Role
from tests.server.conftest import OpCounter

pytestmark = pytest.mark.anyio


async def _refused(relay: Relay, token: str) -> None:
    with pytest.raises(AuthError):
        await relay.access.authenticate(f"Bearer {token}")


async def test_malformed_keys_cost_no_read(relay: Relay, client: Any) -> None:
    counter = OpCounter(client)
    key_id = secrets.token_hex(6)
    for token in (
        f"nrk_{key_id}_{'a' * 20}",  # a secret of the wrong length
        f"nrk_{key_id}_{'a' * 44}",
        f"nrk_{key_id.upper()}_{secrets.token_urlsafe(32)}",  # not lower-case hex
        f"nrk_{key_id}x_{secrets.token_urlsafe(32)}",
        "nrk_" + "0" * 200,
        "sk-" + secrets.token_urlsafe(32),
    ):
        await _refused(relay, token)
    assert counter.ops == []


async def test_an_unknown_key_id_is_read_once_in_a_while(relay: Relay, client: Any) -> None:
    counter = OpCounter(client)
    made_up = new_key_secret()[1]
    for _ in range(5):
        await _refused(relay, made_up)
    assert counter.ops == ["GetItem"]


async def test_a_flood_of_made_up_ids_never_evicts_a_real_key(
    relay: Relay, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(access, "_CACHE_CAP", 100)  # the flood below passes it
    record, real = await relay.keys.create(KeySpec(role=Role.CLIENT, label="real"))
    await relay.access.authenticate(f"Bearer {real}")  # cached now
    for _ in range(150):  # each a new made-up id
        await _refused(relay, new_key_secret()[1])
    counter = OpCounter(client)
    principal = await relay.access.authenticate(f"Bearer {real}")
    assert principal.key_id == record.id
    assert counter.ops == []  # still cached: no read for it
