"""Exactly one wake per burst across API processes (serialized moto, real uvicorn servers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from natrelay_infra.moto_server import MotoProcess
from tests.support.scripted import ScriptedPublisher, echo_answer
from tests.support.stack import (
    CLIENT_TOKEN,
    PUBLISH_TOKEN,
    Server,
    Stack,
    dynamodb_client,
    running_stack,
    wake_tasks_written,
)

pytestmark = pytest.mark.slow  # several processes

PROCESSES, PER_PROCESS = 4, 25
# However loaded the machine, the whole burst queues behind the one wake: the clients, the
# relay and the wake all wait this long at most (a bound, never the expected time).
PATIENCE = 120
SLEEPY = [
    {
        "name": "sleepy",
        "type": "echo",
        "model": "echo",
        "initialStatus": "hibernating",
        "wakeMaxWaitSeconds": PATIENCE,
    }
]


class WakingPublisher(ScriptedPublisher):
    """Runs wake tasks (counting them) and holds inferences until their wake is done."""

    def __init__(self, url: str, fail_with: str | None = None) -> None:
        super().__init__(url, PUBLISH_TOKEN, SLEEPY, answer=self.handle)
        self.fail_with = fail_with
        self.expect = 1 + PROCESSES * PER_PROCESS  # the wake and every inference
        self.wakes_run: list[str] = []
        self.outcomes: dict[str, str | None] = {}
        self.done = threading.Condition()

    def handle(self, task: dict[str, Any], pub: ScriptedPublisher) -> None:
        if task["kind"] == "wake":
            self.wakes_run.append(task["id"])
            # the backend takes a while to come up: long enough for the whole burst to queue
            # behind this wake (a request arriving after a failed wake rightly starts anew)
            deadline = time.monotonic() + PATIENCE
            while len(self.seen) < self.expect and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.fail_with:
                pub.result(
                    task["id"],
                    {"status": 503, "error": {"message": self.fail_with, "code": "wake_failed"}},
                )
            else:
                pub.result(task["id"], {"status": 200, "body": {"ok": True, "ms": 1000}})
            with self.done:
                self.outcomes[task["id"]] = self.fail_with
                self.done.notify_all()
            return
        if task.get("wakeId"):
            with self.done:
                self.done.wait_for(lambda: task["wakeId"] in self.outcomes, timeout=PATIENCE)
                failure = self.outcomes.get(task["wakeId"])
            if failure:
                pub.result(
                    task["id"],
                    {"status": 503, "error": {"message": failure, "code": "wake_failed"}},
                )
                return
        echo_answer(task, pub)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoProcess]:
    """moto in a process of its own: this module's hundred waiting clients share no GIL
    with it."""
    with MotoProcess() as server:
        yield server


@pytest.fixture
def cluster(moto: MotoProcess) -> Iterator[Stack]:
    # moto serializes every request (~10 ms each): 100 waiters re-checking DynamoDB at the
    # default pace would saturate it, so they back off further here; the rule under test
    # (one wake per burst) does not depend on the pace.
    with running_stack(
        moto.endpoint,
        apis=PROCESSES,
        heartbeat_timeout_seconds=30,
        request_timeout_seconds=PATIENCE,
        poll_min_interval_seconds=0.5,
        poll_max_interval_seconds=4,
    ) as stack:
        yield stack


def wake_tasks(stack: Stack) -> int:
    return wake_tasks_written(stack.moto_endpoint, stack.tables.tasks)


def row_status(stack: Stack) -> str:
    item = dynamodb_client(stack.moto_endpoint).get_item(
        TableName=stack.tables.llms, Key={"name": {"S": "sleepy"}}
    )["Item"]
    return str(item["status"]["S"])


def burst(apis: list[Server], n: int = PROCESSES * PER_PROCESS) -> list[httpx.Response]:
    def call(i: int) -> httpx.Response:
        api = apis[i % len(apis)]
        return httpx.post(
            f"{api.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
            json={"model": "sleepy", "messages": [{"role": "user", "content": f"hello {i}"}]},
            timeout=PATIENCE + 30,
        )

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(call, range(n)))


@pytest.mark.timeout(2 * PATIENCE + 60)
def test_one_wake_for_a_burst_of_100_across_4_api_processes(cluster: Stack) -> None:
    apis = cluster.apis
    with WakingPublisher(apis[0].url) as publisher:
        responses = burst(apis)
    assert [r.status_code for r in responses] == [200] * 100, responses[0].text
    assert [r.json()["choices"][0]["message"]["content"] for r in responses] == [
        f"hello {i}" for i in range(100)
    ]
    assert wake_tasks(cluster) == 1
    assert len(publisher.wakes_run) == 1
    assert row_status(cluster) == "active"


@pytest.mark.timeout(2 * PATIENCE + 60)
def test_a_failing_wake_fails_the_whole_burst_with_its_cause_then_retries(
    cluster: Stack,
) -> None:
    apis = cluster.apis
    cause = "wake of sleepy failed: POST http://127.0.0.1:9/wake answered 500"
    with WakingPublisher(apis[0].url, fail_with=cause) as publisher:
        responses = burst(apis)
        assert {r.status_code for r in responses} == {503}
        assert all(r.json()["error"]["message"] == cause for r in responses)
        assert all(int(r.headers["retry-after"]) > 0 for r in responses)
        assert wake_tasks(cluster) == 1 and len(publisher.wakes_run) == 1
        assert row_status(cluster) == "hibernating"
        # the next request starts a fresh wake
        publisher.fail_with = None
        publisher.expect = 0
        again = burst(apis, n=1)
    assert again[0].status_code == 200
    assert wake_tasks(cluster) == 2 and len(publisher.wakes_run) == 2
    assert row_status(cluster) == "active"
