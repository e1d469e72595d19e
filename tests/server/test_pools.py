"""Pools on a real relay (uvicorn + moto): a queue when every member is busy, one wake
for a sleeping pool, keep-alive for queued streams, failover to another member."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from natrelay_infra.moto_server import MotoProcess
from tests.support.net import wait_until
from tests.support.scripted import ScriptedPublisher
from tests.support.stack import Stack, running_stack, unsettled, wake_tasks_written

MSG = [{"role": "user", "content": "hi"}]


def pending(stack: Stack) -> int:
    """Tasks waiting in the queue, as the table holds them."""
    return sum(t["state"] == "pending" for t in unsettled(stack.moto_endpoint, stack.tables))


def auth(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.client_token}"}


def chat(stack: Stack, text: str = "hi", **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/chat/completions",
        headers=auth(stack),
        json={"model": "m", "messages": [{"role": "user", "content": text}], **extra},
        timeout=60,
    )


@pytest.fixture
def heartbeat_timeout() -> float:
    """A held member neither polls nor beats while it holds: it must not be taken for gone
    however long a loaded machine makes the test (the failover test shortens it)."""
    return 60


@pytest.fixture
def pool_stack(moto_server: MotoProcess, heartbeat_timeout: float) -> Iterator[Stack]:
    with running_stack(
        moto_server.endpoint,
        heartbeat_timeout_seconds=heartbeat_timeout,
        max_queue_depth=5,
        stream_keepalive_seconds=0.5,
    ) as stack:
        yield stack


class Held:
    """A member that runs one task at a time and answers only when the test says so."""

    def __init__(self, stack: Stack, providers: list[dict[str, Any]]) -> None:
        self.pub = ScriptedPublisher(stack.url, stack.publish_token, providers)
        self.order: list[str] = []
        self.release = threading.Semaphore(0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Held:
        self.pub.register()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for _ in range(64):
            self.release.release()
        self._thread.join(10)
        self.pub.http.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for task in self.pub.poll_once(wait=0.5, max_tasks=1):
                text = task["request"]["messages"][-1]["content"]
                self.order.append(text)
                self.release.acquire()
                body = {"choices": [{"index": 0, "message": {"content": text}}]}
                self.pub.result(task["id"], {"status": 200, "body": body})


def test_a_busy_pool_queues_first_in_first_out_up_to_its_depth(pool_stack: Stack) -> None:
    with Held(pool_stack, [{"name": "m", "type": "echo", "model": "m"}]) as member:
        answers: dict[str, httpx.Response] = {}

        def ask(text: str) -> None:
            answers[text] = chat(pool_stack, text)

        threads = []
        for i in range(6):  # one runs, five wait: the queue is full
            threads.append(threading.Thread(target=ask, args=(f"r{i}",)))
            threads[-1].start()
            # arrive in order: the next once this one runs (r0) or waits in the queue
            wait_until(lambda i=i: bool(member.order) if i == 0 else pending(pool_stack) == i, 30)
        # the seventh finds the queue full
        full = chat(pool_stack, "r6")
        assert full.status_code == 429, full.text
        assert full.json()["error"]["code"] == "queue_full"
        assert int(full.headers["retry-after"]) >= 1
        for _ in range(6):
            member.release.release()
        for t in threads:
            t.join(30)
    assert [answers[f"r{i}"].status_code for i in range(6)] == [200] * 6
    assert member.order == [f"r{i}" for i in range(6)]  # first in, first out


def test_an_async_task_says_where_it_waits(pool_stack: Stack) -> None:
    with Held(pool_stack, [{"name": "m", "type": "echo", "model": "m"}]) as member:
        locations = []
        for i in range(3):
            resp = httpx.post(
                f"{pool_stack.url}/api/v1/llms/m/infer",
                headers={**auth(pool_stack), "Prefer": "respond-async"},
                json={"messages": [{"role": "user", "content": f"a{i}"}]},
            )
            assert resp.status_code == 202
            locations.append(resp.headers["location"])
        wait_until(lambda: member.order == ["a0"], 30, "the member never took the first")
        views = [
            httpx.get(f"{pool_stack.url}{loc}", headers=auth(pool_stack)).json()
            for loc in locations
        ]
        assert views[0]["state"] == "claimed" and "queuePosition" not in views[0]
        assert [v["queuePosition"] for v in views[1:]] == [0, 1]
        for _ in range(3):
            member.release.release()


def test_a_queued_stream_is_kept_alive_and_runs_when_a_member_frees(pool_stack: Stack) -> None:
    with Held(pool_stack, [{"name": "m", "type": "echo", "model": "m"}]) as member:
        first = threading.Thread(target=chat, args=(pool_stack, "busy"))
        first.start()
        wait_until(lambda: member.order == ["busy"], 30, "the member never took the first")
        lines: list[str] = []
        with httpx.stream(
            "POST",
            f"{pool_stack.url}/v1/chat/completions",
            headers=auth(pool_stack),
            json={"model": "m", "messages": MSG, "stream": True},
            timeout=30,
        ) as resp:
            assert resp.status_code == 200  # answered while still queued
            released = False
            for line in resp.iter_lines():
                lines.append(line)
                if line.startswith(":") and not released and len(lines) > 4:
                    member.release.release()  # the busy one ends: the stream's turn
                    member.release.release()
                    released = True
        first.join(10)
    assert sum(1 for line in lines if line.startswith(":")) >= 2
    assert lines[-2:] == ["data: [DONE]", ""] or "data: [DONE]" in lines


def _wake_then_echo(task: dict[str, Any], pub: ScriptedPublisher) -> None:
    if task["kind"] == "wake":
        time.sleep(0.5)
        pub.result(task["id"], {"status": 200, "body": {"ok": True, "ms": 500}})
        return
    body = {"choices": [{"index": 0, "message": {"content": "awake"}}]}
    pub.result(task["id"], {"status": 200, "body": body})


def test_a_sleeping_pool_wakes_once_and_answers_every_first_request(
    moto_server: MotoProcess,
) -> None:
    sleepy = [
        {
            "name": "m",
            "type": "echo",
            "model": "m",
            "initialStatus": "hibernating",
            "wakeMaxWaitSeconds": 30,
        }
    ]
    with (
        # (members that poll stay live however loaded the machine)
        running_stack(moto_server.endpoint, heartbeat_timeout_seconds=30) as pool_stack,
        ScriptedPublisher(pool_stack.url, pool_stack.publish_token, sleepy, answer=_wake_then_echo),
        ScriptedPublisher(pool_stack.url, pool_stack.publish_token, sleepy, answer=_wake_then_echo),
    ):
        answers: list[httpx.Response] = []
        threads = [
            threading.Thread(target=lambda: answers.append(chat(pool_stack))) for _ in range(20)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert [a.status_code for a in answers] == [200] * 20
    assert wake_tasks_written(pool_stack.moto_endpoint, pool_stack.tables.tasks) == 1


@pytest.mark.parametrize("heartbeat_timeout", [3])
def test_a_request_claimed_by_a_member_that_dies_runs_on_another(pool_stack: Stack) -> None:
    providers = [{"name": "m", "type": "echo", "model": "m"}]
    doomed = ScriptedPublisher(pool_stack.url, pool_stack.publish_token, providers)
    doomed.register()
    # the doomed member claims the request, then stops answering and heartbeating
    answer: dict[str, httpx.Response] = {}
    asking = threading.Thread(target=lambda: answer.setdefault("r", chat(pool_stack, "again")))
    asking.start()
    deadline = time.monotonic() + 10
    while not doomed.poll_once(wait=0.5, max_tasks=1):
        assert time.monotonic() < deadline
    started = time.monotonic()
    with ScriptedPublisher(pool_stack.url, pool_stack.publish_token, providers):
        asking.join(30)
    assert answer["r"].status_code == 200, answer["r"].text
    assert answer["r"].json()["choices"][0]["message"]["content"] == "again"
    # within a heartbeat timeout (3 s) and a liveness check, well before a lease (60 s)
    assert time.monotonic() - started < 40
    doomed.http.close()


@pytest.mark.parametrize("heartbeat_timeout", [3])
def test_an_idempotent_request_gets_one_answer_when_its_member_misses_heartbeats(
    pool_stack: Stack,
) -> None:
    """The rule as it stands (issue 24 builds failover on it): a member that stops
    heartbeating while it still works loses its claim; another member runs the task
    again; the first member's late answer is refused (fenced). The client gets one
    answer, and a repeat of its Idempotency-Key gets that same answer, never the other."""
    providers = [{"name": "m", "type": "echo", "model": "m"}]
    slow = ScriptedPublisher(pool_stack.url, pool_stack.publish_token, providers)
    slow.register()
    once = {**auth(pool_stack), "Idempotency-Key": "order-42"}

    def ask() -> httpx.Response:
        return httpx.post(
            f"{pool_stack.url}/v1/chat/completions",
            headers=once,
            json={"model": "m", "messages": [{"role": "user", "content": "pay once"}]},
            timeout=60,
        )

    answers: list[httpx.Response] = []
    asking = threading.Thread(target=lambda: answers.append(ask()))
    asking.start()
    deadline = time.monotonic() + 10
    claimed: list[dict[str, Any]] = []
    while not claimed:
        assert time.monotonic() < deadline
        claimed = slow.poll_once(wait=0.5, max_tasks=1)
    # the slow member keeps working but sends no heartbeat; another member takes over
    with ScriptedPublisher(pool_stack.url, pool_stack.publish_token, providers) as other:
        asking.join(30)
        assert [t["id"] for t in other.seen] == [claimed[0]["id"]]  # the same task, again
    late = slow.result(claimed[0]["id"], {"status": 200, "body": {"answer": "from the slow"}})
    assert late.status_code == 409, late.text  # fenced: its claim is gone
    [first] = answers
    assert first.status_code == 200, first.text
    assert first.json()["choices"][0]["message"]["content"] == "pay once"
    repeat = ask()
    assert repeat.json() == first.json()  # the key's one answer, nothing ran again
    slow.http.close()
