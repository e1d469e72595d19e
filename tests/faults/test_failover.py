"""Failover without a restart (docs/relay.md, "Failover"), with real processes: a pool
member frozen (SIGSTOP: its sockets stay open, nothing answers, as on a cut network) or
killed (kill -9) in the middle of a burst, in long-poll and doorbell modes. The relay is
`natrelay dev` with the default heartbeat timeout and work window; the publishers keep
their default heartbeat.

Per case: every call is answered, correctly, once, and soon after the window; the frozen
member, resumed, is refused (409 task_moved) for the tasks that moved; a stream that had
sent bytes ends `publisher_lost` with the usage so far.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import httpx
import openai
import pytest

from natrelay.wire import ErrorCode, Paths, TaskResult
from natrelay_infra.moto_server import MotoProcess
from natrelay_infra.tables import TableNames
from tests.faults.test_faults import Call, echo, words
from tests.publisher.running import PublisherProcess, start_publisher
from tests.support.backend import FakeBackend
from tests.support.net import serve, wait_until
from tests.support.stack import (
    CLIENT_TOKEN,
    FAKE_AWS,
    PUBLISH_TOKEN,
    DevRelay,
    running_stack,
    unsettled,
)

# The figures: 3 members of maxConcurrency 2, a backend that answers in 1 s,
# 30 calls at once; each answered within 20 s with the default settings.
MEMBERS = 3
CALLS = 30
SLOWEST_SECONDS = 20.0
WORK_WINDOW_SECONDS = 10.0  # the default (natrelay.settings)


@dataclass
class Relay:
    """A relay under test, however it runs: where clients and publishers go, and the
    tables it keeps its tasks in."""

    mode: str
    url: str
    dynamodb: str
    tables: TableNames
    doorbell: bool

    def publisher_config(self, providers: list[dict[str, Any]], session: Path) -> dict[str, Any]:
        """A publisher with its default heartbeat and poll wait, and the doorbell when
        the relay offers one."""
        relay: dict[str, Any] = {
            "url": self.url,
            "token": PUBLISH_TOKEN,
            "sessionFile": str(session),
        }
        if not self.doorbell:
            relay["doorbell"] = {"enabled": False}
        return {"relay": relay, "providers": providers}

    def unsettled(self) -> list[dict[str, Any]]:
        return unsettled(self.dynamodb, self.tables)


# long-poll and doorbell: `natrelay dev` (server mode, sweeping itself, the doorbell
# served in-process); lambda: the API in Lambda mode (no in-process wake-ups, no sweep)
# with the API Gateway WebSocket stand-in's doorbell and its $disconnect events.
MODES = ["long-poll", "doorbell", "lambda"]


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoProcess]:
    with MotoProcess() as server:
        yield server


@pytest.fixture(params=MODES)
def relay(request: pytest.FixtureRequest, moto: MotoProcess, tmp_path: Path) -> Iterator[Relay]:
    """The relay with the deployed defaults for liveness (heartbeat timeout 90 s, lease
    60 s, work window 10 s) and room for a call to wait past the window."""
    mode = request.param
    if mode == "lambda":
        with running_stack(
            moto.endpoint, tmp_path / "relay.log", gateway=True, request_timeout_seconds=60
        ) as stack:
            yield Relay(mode, stack.url, moto.endpoint, stack.tables, doorbell=True)
        assert "Traceback" not in (tmp_path / "relay.log").read_text()
        return
    env = {"NATRELAY_REQUEST_TIMEOUT_SECONDS": "60", "NATRELAY_POLL_MAX_INTERVAL_SECONDS": "0.5"}
    dev = DevRelay(moto.endpoint, tmp_path, env=env, heartbeat_timeout=90)
    dev.doorbell = mode == "doorbell"
    dev.start()
    try:
        yield Relay(mode, dev.url, moto.endpoint, dev.tables, doorbell=dev.doorbell)
    finally:
        dev.stop()
        assert "Traceback" not in dev.log(), dev.log()


def member(
    relay: Relay,
    tmp_path: Path,
    publishers: list[PublisherProcess],
    providers: list[dict[str, Any]],
    name: str,
) -> PublisherProcess:
    publisher = start_publisher(
        relay.publisher_config(providers, tmp_path / f"{name}.session"), tmp_path, name
    )
    publishers.append(publisher)
    publisher.wait_log("registered session")
    if relay.doorbell:
        publisher.wait_log("doorbell connected")
    return publisher


def ask(relay: Relay, model: str, text: str) -> str | None:
    client = openai.OpenAI(
        base_url=f"{relay.url}/v1", api_key=CLIENT_TOKEN, max_retries=0, timeout=60
    )
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}]
    )
    return reply.choices[0].message.content


def session_of(tmp_path: Path, name: str) -> str:
    data = json.loads((tmp_path / f"{name}.session").read_text())
    return str(data["providerSessionId"])


def moved_from(relay: Relay, session_id: str) -> list[dict[str, Any]]:
    """The tasks taken from a session (`lostBy`), as the tasks table holds them."""
    client = boto3.session.Session().client(
        "dynamodb",
        endpoint_url=relay.dynamodb,
        region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    items = client.scan(
        TableName=relay.tables.tasks,
        FilterExpression="lostBy = :s",
        ExpressionAttributeValues={":s": {"S": session_id}},
    )["Items"]
    return [{"id": i["pk"]["S"].removeprefix("task#"), "state": i["state"]["S"]} for i in items]


def late_result(relay: Relay, task_id: str, session_id: str) -> httpx.Response:
    """What the old holder posts for a task that moved (as its publisher would)."""
    result = TaskResult(
        provider_session_id=session_id, status=200, body={"choices": [], "late": True}
    )
    return httpx.post(
        f"{relay.url}{Paths.TASK_RESULT.format(task_id=task_id)}",
        json=result.model_dump(mode="json", by_alias=True, exclude_none=True),
        headers={"Authorization": f"Bearer {PUBLISH_TOKEN}"},
        timeout=30,
    )


@pytest.mark.parametrize("fault", ["freeze", "kill"])
def test_a_pool_member_lost_mid_burst_hands_its_work_to_the_pool(
    relay: Relay, tmp_path: Path, publishers: list[PublisherProcess], fault: str
) -> None:
    state = FakeBackend(echo=True, latency=1.0)
    with serve(state.app()) as url:
        provider = {
            "name": "m",
            "type": "openai",
            "baseUrl": f"{url}/v1",
            "model": "m1",
            "maxConcurrency": 2,
        }
        names = [f"member{i}" for i in range(MEMBERS)]
        pool = [member(relay, tmp_path, publishers, [provider], n) for n in names]
        victim, victim_session = pool[0], session_of(tmp_path, names[0])
        calls = [Call(partial(ask, relay, "m", f"call {i}")) for i in range(CALLS)]
        # every member busy with its two: the victim holds tasks its backend is running
        wait_until(
            lambda: len(state.requests) >= 2 * MEMBERS,
            30,
            lambda: (
                f"the pool never got busy: {len(state.requests)} at the backend; calls: "
                f"{[repr(c.error) for c in calls if c.error][:3]}; {pool[0].log()[-2000:]}"
            ),
        )
        if fault == "freeze":
            victim.process.send_signal(signal.SIGSTOP)
        else:
            victim.process.kill()
            victim.process.wait()
        try:
            done = [call.result(SLOWEST_SECONDS + 30) for call in calls]
            for i, call in enumerate(done):
                assert call.error is None, (i, call.error)
                assert call.answer == f"call {i}", (i, call.answer)
            slowest = max(call.seconds for call in done)
            moved = moved_from(relay, victim_session)
            print(f"{fault}, {relay.mode}: {len(moved)} moved, slowest call {slowest:.1f} s")
            assert slowest <= SLOWEST_SECONDS, slowest
            assert moved, "the lost member held no task: the fault proved nothing"
            assert all(task["state"] == "completed" for task in moved), moved
        finally:
            if fault == "freeze":
                victim.process.send_signal(signal.SIGCONT)
        # The old holder's answers are refused (fenced): the clients' stay as they were.
        for task in moved:
            late = late_result(relay, task["id"], victim_session)
            assert late.status_code == 409, late.text
            assert late.json()["error"]["code"] == ErrorCode.TASK_MOVED
        assert {t["state"] for t in moved_from(relay, victim_session)} == {"completed"}
        if fault == "freeze":
            # resumed, it drops what moved (refused, or told in a beat's answer) and serves
            wait_until(
                lambda: (
                    "its answer is dropped" in victim.log()
                    or "backend request aborted" in victim.log()
                ),
                30,
                lambda: f"the resumed member never let its moved tasks go:\n{victim.log()}",
            )
            assert victim.process.poll() is None
            assert "Traceback" not in victim.log(), victim.log()
        assert [ask(relay, "m", f"after {i}") for i in range(4)] == [f"after {i}" for i in range(4)]
        wait_until(lambda: not relay.unsettled(), 30, lambda: f"unfinished: {relay.unsettled()}")


def test_a_stream_whose_member_froze_ends_publisher_lost(
    relay: Relay, tmp_path: Path, publishers: list[PublisherProcess]
) -> None:
    """A stream that sent bytes cannot move: it ends within the window with an error
    event naming the cause, and the usage so far."""
    frozen = member(relay, tmp_path, publishers, [echo("s", delay_ms=200)], "s")
    events: list[str] = []
    froze_at: list[float] = []

    def stream() -> None:
        body = {"model": "s", "stream": True, "messages": [{"role": "user", "content": words(200)}]}
        headers = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
        with httpx.stream(
            "POST", f"{relay.url}/v1/chat/completions", json=body, headers=headers, timeout=60
        ) as answer:
            for line in answer.iter_lines():
                if line.startswith("data: "):
                    events.append(line.removeprefix("data: "))

    call = Call(stream)
    wait_until(
        lambda: len(events) >= 3,
        30,
        lambda: f"the stream never started: {events} {call.error!r}; {frozen.log()[-2000:]}",
    )
    frozen.process.send_signal(signal.SIGSTOP)
    froze_at.append(time.monotonic())
    try:
        call.result(WORK_WINDOW_SECONDS + 30)
        ended_after = time.monotonic() - froze_at[0]
    finally:
        frozen.process.send_signal(signal.SIGCONT)
    assert call.error is None, call.error
    last = json.loads(events[-1])
    assert last["error"]["code"] == ErrorCode.PUBLISHER_LOST, last
    assert "mid-stream" in last["error"]["message"]
    usage = last["usage"]
    assert usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 0, usage
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # within the window (and a waiter's check), not after the request's timeout
    assert ended_after <= WORK_WINDOW_SECONDS + 10, ended_after
    assert "[DONE]" not in events
    os.kill(frozen.process.pid, 0)  # resumed, still running
