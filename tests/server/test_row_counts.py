"""Rows' requests per hour and minute (the console's overview and charts): written at
once in Lambda mode, batched per row in server mode (one long-lived process)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from natrelay.service import Relay
from natrelay.service.assembly import build_relay
from natrelay.service.row_stats import Sample
from natrelay.settings import Settings
from natrelay.store import Stores
from tests.server.conftest import FakeClock, OpCounter

pytestmark = pytest.mark.anyio


async def _last_hour(relay: Relay, name: str) -> tuple[int, int]:
    recent = await relay.row_stats.recent(name)
    assert recent is not None
    return recent.last_hour


async def test_a_long_lived_process_writes_each_rows_counts_once(relay: Relay, client: Any) -> None:
    assert relay.row_stats.batching  # server mode: the tests' default
    counter = OpCounter(client)
    for error in (False, False, True):
        await relay.row_stats.count(Sample("a", error))
    await relay.row_stats.count(Sample("b", False))
    assert counter.ops == []  # nothing written per request
    await relay.row_stats.flush()
    # per row, its hour; and, the first time this hour, its name among the rows counted
    assert counter.ops == ["UpdateItem"] * 4
    counter.ops.clear()
    assert await _last_hour(relay, "a") == (3, 1)
    assert await _last_hour(relay, "b") == (1, 0)
    await relay.row_stats.flush()
    assert counter.ops == ["Query"] * 2  # one read per row; nothing left to write
    counter.ops.clear()
    await relay.row_stats.count(Sample("a", False))
    await relay.row_stats.flush()
    assert counter.ops == ["UpdateItem"]  # the name is noted once an hour


async def test_the_counts_are_written_within_the_flush_time(
    relay: Relay, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay.row_stats._batch, "seconds", 0.05)  # FLUSH_SECONDS, shortened
    counter = OpCounter(client)
    await relay.row_stats.count(Sample("a", False))
    await relay.row_stats.count(Sample("a", True))
    with anyio.fail_after(5):  # the hour, then (once an hour) the row's name
        while counter.ops.count("UpdateItem") < 2:
            await anyio.sleep(0.02)
    assert counter.ops == ["UpdateItem"] * 2  # one write each, for both requests
    assert await _last_hour(relay, "a") == (2, 1)


async def test_the_board_writes_this_process_counts_first(relay: Relay) -> None:
    await relay.row_stats.count(Sample("a", True))
    assert await _last_hour(relay, "a") == (0, 0)  # still in this process
    await relay.board.rows()
    assert await _last_hour(relay, "a") == (1, 1)


async def test_in_lambda_mode_each_request_is_written(
    client: Any, settings: Settings, clock: FakeClock
) -> None:
    lambda_mode = settings.model_copy(update={"mode": "lambda"})
    relay = build_relay(lambda_mode, Stores.on(client, "Llms", "Tasks", "Keys"), clock=clock)
    counter = OpCounter(client)
    await relay.row_stats.count(Sample("a", False))
    await relay.row_stats.count(Sample("a", True))
    assert counter.ops == ["UpdateItem"] * 3  # each request; the row's name once
    assert await _last_hour(relay, "a") == (2, 1)
    clock.advance(3601)
    assert await _last_hour(relay, "a") == (0, 0)  # an hour on: gone from the last hour
