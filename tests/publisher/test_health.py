"""A busy backend is not a down one: llama.cpp's server (and llama-cpp-python's) answer
nothing else while they generate. A fake of that in front of a real relay and publisher;
and the check's adaptive timeout on its own."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from natrelay_publisher.health import Health
from tests.publisher.one_slot import OneSlot, solo
from tests.publisher.running import publisher_config, start_publisher, wait_rows
from tests.support.net import serve, wait_until
from tests.support.stack import Stack


def _row(stack: Stack) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    row: dict[str, Any] = httpx.get(f"{stack.url}/api/v1/llms/solo", headers=headers).json()
    return row


def _beat_at(row: dict[str, Any]) -> float:
    return datetime.fromisoformat(row["lastHeartbeatAt"].replace("Z", "+00:00")).timestamp()


def _beaten_after(stack: Stack, moment: float) -> dict[str, Any] | None:
    row = _row(stack)
    return row if _beat_at(row) > moment else None


def _ask(stack: Stack, text: str) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {stack.client_token}"},
        json={"model": "solo", "messages": [{"role": "user", "content": text}]},
        timeout=120,
    )


def test_a_backend_busy_generating_stays_active(stack: Stack, tmp_path: Path) -> None:
    backend = OneSlot()
    with serve(backend.app()) as url, ThreadPoolExecutor(2) as pool:
        config = publisher_config(stack, tmp_path, [solo(url, healthTimeoutSeconds=0.5)])
        publisher = start_publisher(config, tmp_path)
        try:
            wait_rows(stack, {"solo": "active"})
            # a loaded machine may miss the first 0.5 s check of the idle backend: what
            # counts is what happens once it is busy
            idle_log = len(publisher.log())
            first = pool.submit(_ask, stack, "a long answer")
            assert backend.generating.wait(30)
            busy_since = time.time()
            # three heartbeats (one a second) while it generates: each would have checked
            # its model list, which does not answer now
            row = wait_until(lambda: _beaten_after(stack, busy_since + 3), 60, "no heartbeat")
            assert row["status"] == "active", publisher.log()
            second = pool.submit(_ask, stack, "the next one")
            wait_until(lambda: _row(stack)["queueDepth"] == 1, 30, "not queued")
            backend.release.set()
            assert first.result().status_code == 200
            answer = second.result()
            assert answer.status_code == 200, answer.text  # queued, not 503 unavailable
            assert answer.json()["choices"][0]["message"]["content"] == "the next one"
        finally:
            backend.release.set()
            assert publisher.stop() == 0
    log = publisher.log()[idle_log:]
    assert "backend of solo is down" not in log and "unavailable" not in log, log


def test_names_of_one_server_are_busy_together(stack: Stack, tmp_path: Path) -> None:
    # One llama.cpp server publishing two names: while one generates, the other is not
    # checked either (its check would wait, or cut llama-cpp-python's stream short).
    backend = OneSlot()
    with serve(backend.app()) as url, ThreadPoolExecutor(1) as pool:
        providers = [
            solo(url, healthTimeoutSeconds=0.5),
            solo(url, name="solo-two", healthTimeoutSeconds=0.5),
        ]
        publisher = start_publisher(publisher_config(stack, tmp_path, providers), tmp_path)
        try:
            wait_rows(stack, {"solo": "active", "solo-two": "active"})
            idle_log = len(publisher.log())
            first = pool.submit(_ask, stack, "a long answer")
            assert backend.generating.wait(30)
            busy_since = time.time()
            wait_until(lambda: _beaten_after(stack, busy_since + 3), 60, "no heartbeat")
            assert backend.listed_while_busy == 0
            backend.release.set()
            assert first.result().status_code == 200
        finally:
            backend.release.set()
            assert publisher.stop() == 0
    log = publisher.log()[idle_log:]
    assert "is down" not in log and "unavailable" not in log, log


@pytest.mark.anyio
async def test_the_check_waits_longer_for_a_backend_that_was_slow() -> None:
    now = [100.0]
    health = Health(timeout=1.0, ceiling=10.0, clock=lambda: now[0])

    async def answers_in(seconds: float) -> bool:
        now[0] += seconds  # the clock moves; no real wait
        return True

    assert health.timeout == 1.0
    assert await health.check(lambda: answers_in(2.0)) is True
    assert health.timeout == 6.0  # three times its slowest recent answer
    assert await health.check(lambda: answers_in(5.0)) is True
    assert health.timeout == 10.0  # never past the ceiling (half a heartbeat)

    async def never() -> bool:
        await asyncio.Event().wait()
        return True

    quick = Health(timeout=0.05, ceiling=0.05)
    assert await quick.check(never) is False  # an idle backend that does not answer
    async with quick.request():
        assert await quick.check(never) is None  # busy: not asked at all
    assert not quick.busy


@pytest.mark.anyio
async def test_a_request_waits_for_the_check_on_its_way() -> None:
    # llama-cpp-python's server cuts a stream short when a check reaches it after the
    # stream began: the request goes to the backend once the check has its answer.
    health = Health(timeout=30.0, ceiling=30.0)
    asked, answer = asyncio.Event(), asyncio.Event()
    entered: list[str] = []

    async def slow_listing() -> bool:
        asked.set()
        await answer.wait()
        entered.append("check answered")
        return True

    async def infer() -> None:
        async with health.request():
            entered.append("request sent")

    checking = asyncio.create_task(health.check(slow_listing))
    await asked.wait()
    sending = asyncio.create_task(infer())
    await asyncio.sleep(0)
    assert health.busy and entered == []
    answer.set()
    await sending
    assert entered == ["check answered", "request sent"]
    assert await checking is None  # the backend became busy meanwhile: no verdict
    # with no check on its way, a request goes at once
    await asyncio.wait_for(infer(), 5)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
