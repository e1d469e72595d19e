"""Rows' requests and errors per minute (the status page's last hour): written at once
without in-process signals (Lambda), batched per row in a long-lived process."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from natrelay.service import Relay
from natrelay.service.assembly import build_relay
from natrelay.settings import Settings
from natrelay.store import Stores
from tests.server.conftest import FakeClock, OpCounter

pytestmark = pytest.mark.anyio


async def test_a_long_lived_process_writes_each_rows_counts_once(relay: Relay, client: Any) -> None:
    assert relay.usage.batching  # in-process signals: the tests' default
    counter = OpCounter(client)
    for error in (False, False, True):
        await relay.usage.count_row("a", error=error)
    await relay.usage.count_row("b", error=False)
    assert counter.ops == []  # nothing written per request
    await relay.usage.flush_rows()
    assert counter.ops == ["UpdateItem", "UpdateItem"]  # one per row
    counter.ops.clear()
    assert await relay.usage.last_hour("a") == (3, 1)
    assert await relay.usage.last_hour("b") == (1, 0)
    await relay.usage.flush_rows()
    assert counter.ops == ["GetItem"] * 4  # nothing left to write


async def test_the_counts_are_written_within_the_flush_time(
    relay: Relay, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay.usage._rows, "seconds", 0.05)  # ROW_FLUSH_SECONDS, shortened
    counter = OpCounter(client)
    await relay.usage.count_row("a", error=False)
    await relay.usage.count_row("a", error=True)
    with anyio.fail_after(5):
        while "UpdateItem" not in counter.ops:
            await anyio.sleep(0.02)
    assert counter.ops == ["UpdateItem"]
    assert await relay.usage.last_hour("a") == (2, 1)


async def test_the_status_board_writes_this_process_counts_first(relay: Relay) -> None:
    await relay.usage.count_row("a", error=True)
    assert await relay.usage.last_hour("a") == (0, 0)  # still in this process
    await relay.board.rows()
    assert await relay.usage.last_hour("a") == (1, 1)


async def test_in_lambda_mode_each_request_is_written(
    client: Any, settings: Settings, clock: FakeClock
) -> None:
    lambda_mode = settings.model_copy(update={"mode": "lambda"})
    relay = build_relay(lambda_mode, Stores.on(client, "Llms", "Tasks", "Keys"), clock=clock)
    counter = OpCounter(client)
    await relay.usage.count_row("a", error=False)
    await relay.usage.count_row("a", error=True)
    assert counter.ops == ["UpdateItem", "UpdateItem"]
    assert await relay.usage.last_hour("a") == (2, 1)
    clock.advance(3601)
    assert await relay.usage.last_hour("a") == (0, 0)  # an hour on: gone from the page
