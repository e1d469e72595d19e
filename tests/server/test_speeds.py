"""Capacity-aware dispatch: members' measured speed (service.speeds) and what a slow
member leaves to faster ones, alone and on a real relay (uvicorn + moto)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from natrelay.service.dispatch import leaves_to_others
from natrelay.service.endings import PoolHint
from natrelay.service.speeds import FRESH_SECONDS, Speeds
from natrelay_infra.moto_server import MotoProcess
from tests.server.conftest import FakeClock
from tests.support.net import wait_until
from tests.support.scripted import ScriptedPublisher, echo_answer
from tests.support.stack import running_stack

ECHO = [{"name": "m", "type": "echo", "model": "m"}]


def test_a_member_much_slower_than_the_fastest_is_handicapped_by_the_difference() -> None:
    clock = FakeClock()
    speeds = Speeds(clock)
    for seconds in (1.0, 1.0, 1.0):
        speeds.observe("m", "fast", seconds)
    speeds.observe("m", "slow", 3.0)
    speeds.observe("m", "peer", 1.2)
    assert speeds.handicap("m", "fast") == 0.0
    assert speeds.handicap("m", "peer") == 0.0  # not SLOWER times slower
    assert speeds.handicap("m", "slow") == 2.0
    assert speeds.handicap("m", "slow", ["slow", "peer"]) == 3.0 - 1.2  # of these only
    assert speeds.handicap("other-pool", "slow") == 0.0
    speeds.observe("m", "slow", 1.0)  # it got faster: the average follows
    slow = speeds.of("m", "slow")
    assert slow is not None and slow.tasks == 2 and abs(slow.seconds - 2.4) < 1e-9
    clock.advance(FRESH_SECONDS + 1)  # old measures do not count
    assert speeds.of("m", "fast") is None and speeds.handicap("m", "slow") == 0.0


def test_a_slow_member_takes_a_queued_task_once_it_waited_its_handicap() -> None:
    clock = FakeClock()
    speeds = Speeds(clock)
    speeds.observe("m", "fast", 1.0)
    speeds.observe("m", "slow", 3.0)
    now = clock()
    fresh = PoolHint("t1", "m", queued_at=now)
    assert leaves_to_others("slow", fresh, now, speeds)
    assert not leaves_to_others("fast", fresh, now, speeds)
    assert not leaves_to_others("slow", fresh, now + 2.0, speeds)
    # a task meant for a member (affinity) is its alone for a moment, however slow it is
    meant = PoolHint("t2", "m", prefer="slow", prefer_until=now + 1, queued_at=now)
    assert not leaves_to_others("slow", meant, now, speeds)
    assert leaves_to_others("fast", meant, now, speeds)
    assert not leaves_to_others("fast", meant, now + 1.5, speeds)


def answering_in(seconds: float) -> Callable[[dict[str, Any], ScriptedPublisher], None]:
    def answer(task: dict[str, Any], pub: ScriptedPublisher) -> None:
        time.sleep(seconds)
        echo_answer(task, pub)

    return answer


def test_the_fast_member_of_a_pool_gets_most_of_the_work(moto_server: MotoProcess) -> None:
    with (
        running_stack(moto_server.endpoint, heartbeat_timeout_seconds=60) as stack,
        ScriptedPublisher(stack.url, stack.publish_token, ECHO, answer=answering_in(0.05)) as fast,
        ScriptedPublisher(stack.url, stack.publish_token, ECHO, answer=answering_in(0.4)) as slow,
    ):
        headers = {"Authorization": f"Bearer {stack.client_token}"}

        def pool() -> dict[str, Any]:
            view: dict[str, Any] = httpx.get(f"{stack.url}/api/v1/llms/m", headers=headers).json()
            return view

        wait_until(lambda: len(pool()["members"]) == 2, 30, "the members never joined")
        for n in range(24):
            resp = httpx.post(
                f"{stack.url}/v1/chat/completions",
                headers=headers,
                json={"model": "m", "messages": [{"role": "user", "content": f"r{n}"}]},
                timeout=60,
            )
            assert resp.status_code == 200, resp.text
        served = Counter({"fast": len(fast.seen), "slow": len(slow.seen)})
        assert served["fast"] >= 2 * served["slow"], served
        measured = {m["member"]: m for m in pool()["members"]}
        assert all(m["secondsPerTask"] > 0 and m["measuredTasks"] >= 1 for m in measured.values())
