"""Requests a key's limits refuse are counted on its day (`refused`), apart from the
requests it was served: written at once (Lambda), or added up with the rest of its
usage (long-lived)."""

from __future__ import annotations

from typing import Any

import pytest

from natrelay.errors import BudgetExceededError, RateLimitError
from natrelay.service import Principal
from natrelay.service.assembly import build_relay
from natrelay.settings import Settings
from natrelay.store import Stores
from natrelay.wire import Role
from tests.server.conftest import FakeClock

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("long_lived", [False, True], ids=["lambda", "long-lived"])
async def test_refusals_are_counted(
    client: Any, settings: Settings, clock: FakeClock, long_lived: bool
) -> None:
    settings = settings.model_copy(update={"mode": "server" if long_lived else "lambda"})
    relay = build_relay(settings, Stores.on(client, "Llms", "Tasks", "Keys"), clock=clock)
    key = Principal(key_id="k1", role=Role.CLIENT, rpm=1)
    await relay.usage.admit(key, "t1", clock() + 60)
    for task in ("t2", "t3"):
        with pytest.raises(RateLimitError) as refused:
            await relay.usage.admit(key, task, clock() + 60)
        assert not isinstance(refused.value, BudgetExceededError)
    await relay.drain()  # long-lived: what it added up is written now (on stopping)
    (today,) = await relay.usage.days("k1", 1)
    assert today.refused == 2
    assert today.requests == 0  # admitted, not ended: counted when it ends
