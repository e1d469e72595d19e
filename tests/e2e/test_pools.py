"""End to end: three real publisher processes serve one name as a pool, through the
official openai client; one is killed with SIGKILL halfway through a burst."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from natrelay_infra.moto_server import MotoProcess
from tests.publisher.running import PublisherProcess, publisher_config, start_publisher
from tests.support.backend import FakeBackend
from tests.support.net import serve, wait_until
from tests.support.stack import Stack, running_stack

MEMBERS = 3
BUDGET = 25.0
# Short, so that a killed member is soon known gone; long enough that a live one, busy on
# a loaded machine, is not taken for gone.
HEARTBEAT_TIMEOUT = 6


@pytest.fixture
def pool(
    moto_server: MotoProcess, tmp_path: Path
) -> Iterator[tuple[Stack, list[FakeBackend], list[PublisherProcess]]]:
    """A relay, three backends answering in 300 ms, and three publishers of `m` (one each,
    maxConcurrency 1)."""
    backends = [FakeBackend(latency=0.3, echo=True) for _ in range(MEMBERS)]
    with contextlib.ExitStack() as stack:
        relay = stack.enter_context(
            running_stack(moto_server.endpoint, heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT)
        )
        publishers: list[PublisherProcess] = []
        for i, backend in enumerate(backends):
            url = stack.enter_context(serve(backend.app()))
            provider = {
                "name": "m",
                "type": "openai",
                "baseUrl": f"{url}/v1",
                "model": "m1",
                "maxConcurrency": 1,
            }
            home = tmp_path / f"member{i}"
            home.mkdir()
            publishers.append(start_publisher(publisher_config(relay, home, [provider]), home))
        stack.callback(
            lambda: [p.stop(signal.SIGKILL, 10) for p in publishers if p.process.poll() is None]
        )

        def members() -> int:
            row = httpx.get(
                f"{relay.url}/api/v1/llms/m",
                headers={"Authorization": f"Bearer {relay.client_token}"},
            )
            return len(row.json().get("members") or []) if row.is_success else 0

        wait_until(lambda: members() == MEMBERS, 30, "the pool never had three members")
        yield relay, backends, publishers


def _client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack.url}/v1", api_key=stack.client_token, max_retries=0, timeout=BUDGET + 5
    )


def _ask(client: openai.OpenAI, i: int) -> tuple[str, float]:
    started = time.monotonic()
    reply = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": f"request {i}"}]
    )
    return reply.choices[0].message.content or "", time.monotonic() - started


def test_thirty_requests_spread_over_the_pool(
    pool: tuple[Stack, list[FakeBackend], list[PublisherProcess]],
) -> None:
    stack, backends, _ = pool
    client = _client(stack)
    started = time.monotonic()
    with ThreadPoolExecutor(30) as ex:
        answers = list(ex.map(lambda i: _ask(client, i), range(30)))
    wall = time.monotonic() - started
    assert sorted(text for text, _ in answers) == sorted(f"request {i}" for i in range(30))
    served = [len(b.requests) for b in backends]
    assert sum(served) == 30
    # the work spreads: no member starves, none takes everything
    assert min(served) >= 5, served
    print(
        f"30 requests over {MEMBERS} members (300 ms each, one at a time): {wall:.2f} s, {served}"
    )


def _ask_or_error(client: openai.OpenAI, i: int, stream: bool) -> tuple[str, float]:
    started = time.monotonic()
    try:
        if stream:
            text = "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": f"s {i}"}], stream=True
                )
                if c.choices
            )
        else:
            text, _ = _ask(client, i)
        outcome = "ok" if text else "empty"
    except openai.APIError as exc:
        # only a stream that had started may fail (its member died mid-way)
        outcome = f"error: {exc}"
    return outcome, time.monotonic() - started


def test_a_member_killed_halfway_loses_no_request(
    pool: tuple[Stack, list[FakeBackend], list[PublisherProcess]],
) -> None:
    stack, backends, publishers = pool
    client = _client(stack)
    with ThreadPoolExecutor(30) as ex:
        futures = [ex.submit(_ask_or_error, client, i, i % 5 == 0) for i in range(30)]
        # about a third done, and the first member among those serving
        wait_until(
            lambda: sum(len(b.requests) for b in backends) >= 10 and backends[0].requests,
            BUDGET,
            lambda: f"the pool served {[len(b.requests) for b in backends]}",
        )
        publishers[0].process.send_signal(signal.SIGKILL)
        results = [f.result() for f in futures]
    errors = [outcome for outcome, _ in results if outcome != "ok"]
    streamed_errors = [
        o for (o, _), i in zip(results, range(30), strict=True) if o != "ok" and i % 5 == 0
    ]
    # every plain request is answered; only a stream that had started may end in an error
    assert errors == streamed_errors, errors
    assert all("error" in e for e in errors)
    assert max(elapsed for _, elapsed in results) < BUDGET
