"""Several OS processes against one serialized moto server: claims and the sweep race."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
from typing import Any

import pytest

from natrelay.service import Relay
from natrelay.service.assembly import build_relay
from natrelay.settings import Settings
from natrelay.wire import HeartbeatRequest, PollRequest, ProviderSpec, RegisterRequest
from natrelay_infra.moto_server import MotoProcess
from natrelay_infra.tables import TableNames
from tests.server.conftest import CLIENT, PUB
from tests.support.stack import FAKE_AWS, fresh_tables

pytestmark = pytest.mark.slow  # several processes

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
TASKS = 120


def _service(endpoint: str, tables: TableNames, **overrides: Any) -> Relay:
    os.environ.update(FAKE_AWS)
    settings = Settings(
        dynamodb_endpoint=endpoint,
        llms_table=tables.llms,
        tasks_table=tables.tasks,
        keys_table=tables.keys,
        mode="lambda",
        poll_min_interval_seconds=0.01,
        poll_max_interval_seconds=0.05,
        **overrides,
    )
    return build_relay(settings)


def _poller(
    endpoint: str, tables: TableNames, session: str, start: Any, claimed: Any, out: Any
) -> None:
    """Poll until every task was claimed (by any poller), starting with the others."""
    relay = _service(endpoint, tables)

    async def run() -> list[str]:
        got: list[str] = []
        deadline = time.monotonic() + 120  # a bound: a lost task ends the test here
        while claimed.value < TASKS and time.monotonic() < deadline:
            polled = await relay.claims.poll(
                PUB, PollRequest(provider_session_id=session, wait_seconds=0.2, max_tasks=3)
            )
            got.extend(t.id for t in polled)
            with claimed.get_lock():
                claimed.value += len(polled)
        return got

    start.wait(120)
    out.put(asyncio.run(run()))


def test_every_task_is_claimed_exactly_once_across_processes(moto_server: MotoProcess) -> None:
    """Two members of one pool (two sessions of one key), four polling processes."""
    tables = fresh_tables(moto_server.endpoint)
    relay = _service(moto_server.endpoint, tables)
    providers = [ProviderSpec(name="m", type="echo", model="m")]

    async def setup() -> tuple[list[str], set[str]]:
        sessions = [
            (await relay.sessions.register(PUB, RegisterRequest(providers=providers))).session.id
            for _ in range(2)
        ]
        ids = {(await relay.queue.submit(CLIENT, "m", CHAT, stream=False)).id for _ in range(TASKS)}
        return sessions, ids

    sessions, submitted = asyncio.run(setup())
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start, claimed_count = ctx.Barrier(4), ctx.Value("i", 0)
    procs = [
        ctx.Process(
            target=_poller,
            args=(moto_server.endpoint, tables, sessions[i % 2], start, claimed_count, out),
        )
        for i in range(4)
    ]
    for p in procs:
        p.start()
    claimed = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    flat = [task_id for got in claimed for task_id in got]
    assert len(flat) == len(set(flat)), "a task was handed to two polls"
    assert set(flat) == submitted, "a task was lost"
    # both members served: the pool's queue is shared
    assert all(claimed)


def _heartbeater(endpoint: str, tables: TableNames, session: str, seconds: float) -> None:
    relay = _service(endpoint, tables, heartbeat_timeout_seconds=0.3)

    async def run() -> None:
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=session))
            i += 1
            await asyncio.sleep(0.25 + 0.1 * (i % 3))  # around the timeout: races happen

    asyncio.run(run())


def _sweeper(endpoint: str, tables: TableNames, seconds: float, out: Any) -> None:
    relay = _service(endpoint, tables, heartbeat_timeout_seconds=0.3)

    async def run() -> dict[str, int]:
        totals: dict[str, int] = {}
        violations = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for k, v in (await relay.sweeper.run()).items():
                totals[k] = totals.get(k, 0) + v
            row = await relay.stores.llms.get("m")
            assert row is not None
            if row.inactive_since is not None and row.last_heartbeat_at is not None:
                # inactive only if the last heartbeat really was older than the timeout
                violations += row.last_heartbeat_at > row.inactive_since - 0.3
        totals["violations"] = violations
        return totals

    out.put(asyncio.run(run()))


def test_sweep_never_overwrites_a_heartbeat_across_processes(moto_server: MotoProcess) -> None:
    tables = fresh_tables(moto_server.endpoint)
    relay = _service(moto_server.endpoint, tables)
    reg = asyncio.run(
        relay.sessions.register(
            PUB, RegisterRequest(providers=[ProviderSpec(name="m", type="echo", model="m")])
        )
    )
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_heartbeater,
            args=(moto_server.endpoint, tables, reg.session.id, 4.0),
        ),
        ctx.Process(target=_sweeper, args=(moto_server.endpoint, tables, 4.0, out)),
    ]
    for p in procs:
        p.start()
    totals = out.get(timeout=60)
    for p in procs:
        p.join(timeout=30)
    assert totals["violations"] == 0
    assert totals["inactive"] > 0, "the row never went stale: the test raced nothing"
