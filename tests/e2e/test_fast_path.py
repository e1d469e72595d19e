"""End to end, the fast path (docs/relay.md "The fast path"): the openai client -> a relay
process (uvicorn, moto) -> a real publisher process -> an echo backend.

What the tasks table holds while the backend works tells the paths apart: nothing on the
fast path (the task lives in the relay's memory), a claimed task on the durable path.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from natrelay.wire import Paths
from natrelay_infra.moto_server import MotoProcess
from tests.publisher.running import (
    PublisherProcess,
    publisher_config,
    publishing,
    start_publisher,
    wait_rows,
)
from tests.support.backend import FakeBackend
from tests.support.net import serve, wait_until
from tests.support.stack import Stack, dynamodb_client, running_stack, start_api

LATENCY = 0.6  # the backend's time on every answer


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(echo=True, latency=LATENCY)


@pytest.fixture
def echo(backend: FakeBackend) -> Iterator[str]:
    with serve(backend.app()) as url:
        yield url


def provider(backend_url: str) -> dict[str, Any]:
    return {
        "name": "echo",
        "type": "openai",
        "baseUrl": f"{backend_url}/v1",
        "model": "echo-backend",
        "maxConcurrency": 8,
    }


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.client_token, max_retries=0)


def tasks(stack: Stack) -> list[dict[str, Any]]:
    """The task items (sk `m`) in the stack's tasks table."""
    ddb = dynamodb_client(stack.moto_endpoint)
    items = ddb.scan(TableName=stack.tables.tasks)["Items"]
    return [i for i in items if i["sk"]["S"] == "m" and i["pk"]["S"].startswith("task#")]


def ask(stack: Stack, text: str) -> str | None:
    answer = client(stack).chat.completions.create(
        model="echo", messages=[{"role": "user", "content": text}]
    )
    return answer.choices[0].message.content


def while_it_runs(stack: Stack, backend: FakeBackend, text: str) -> tuple[str | None, list[str]]:
    """Ask, and read the tasks table while the backend holds the request: the answer, and
    the states of the task items not completed at that moment."""
    got: list[str | None] = []
    backend.hold()
    asker = threading.Thread(target=lambda: got.append(ask(stack, text)))
    asker.start()
    try:
        backend.holding(1)
        states = [t["state"]["S"] for t in tasks(stack) if t["state"]["S"] != "completed"]
    finally:
        backend.release()
        asker.join(timeout=60)
    assert got, "no answer"
    return got[0], states


def test_a_request_served_in_memory_is_fetchable_with_its_result_afterwards(
    stack: Stack, backend: FakeBackend, echo: str, tmp_path: Path
) -> None:
    with publishing(stack, tmp_path, [provider(echo)], {"echo": "active"}):
        # The publisher's poll must wait idle in the relay when the request comes; on a
        # loaded machine it may still be on its way: then the request takes the durable
        # path, and the next one is tried.
        for attempt in range(5):
            text = f"over the fast path {attempt}"
            answer, states = while_it_runs(stack, backend, text)
            assert answer == text
            if not states:
                break  # nothing written while the backend worked: handed in memory
        else:
            raise AssertionError(f"no request took the fast path: {states}")

        def all_written() -> list[dict[str, Any]] | None:
            done = [t for t in tasks(stack) if t["state"]["S"] == "completed"]
            return done if len(done) == attempt + 1 else None

        written = wait_until(all_written, 10, "the task's record was never written")
        fetched = [
            httpx.get(
                f"{stack.url}{Paths.TASK.format(task_id=t['pk']['S'].removeprefix('task#'))}",
                headers={"Authorization": f"Bearer {stack.client_token}"},
                timeout=10,
            )
            for t in written
        ]
        assert all(f.status_code == 200 for f in fetched), [f.text for f in fetched]
        results = [f.json()["result"]["choices"][0]["message"]["content"] for f in fetched]
        assert text in results, results


def test_with_the_fast_path_off_the_durable_path_serves_the_same_answer(
    moto_server: MotoProcess, backend: FakeBackend, echo: str, tmp_path: Path
) -> None:
    with (
        running_stack(moto_server.endpoint, heartbeat_timeout_seconds=5, fast_path=False) as stack,
        publishing(stack, tmp_path, [provider(echo)], {"echo": "active"}),
    ):
        answer, states = while_it_runs(stack, backend, "over the durable path")
        assert answer == "over the durable path"
        assert states == ["claimed"]  # the claimed task is in DynamoDB as it runs


def test_a_relay_killed_right_after_answering_loses_no_answer(
    stack: Stack, backend: FakeBackend, echo: str, tmp_path: Path
) -> None:
    """Every client gets its own correct answer or a connection error; none gets a wrong,
    empty or cut answer, and the restarted relay serves again."""
    outcomes: dict[int, str] = {}
    first = threading.Event()

    def asker(i: int) -> None:
        try:
            answer = ask(stack, f"question {i}")
        except openai.APIConnectionError:
            outcomes[i] = "connection error"
        except Exception as exc:  # anything else is a failure of the test
            outcomes[i] = f"{type(exc).__name__}: {exc}"
        else:
            outcomes[i] = "right" if answer == f"question {i}" else f"wrong: {answer!r}"
            first.set()

    with publishing(stack, tmp_path, [provider(echo)], {"echo": "active"}):
        threading.Event().wait(0.5)
        askers = [threading.Thread(target=asker, args=(i,)) for i in range(12)]
        backend.hold(passing=1)  # the first answer goes out; the backend holds the next

        def start() -> None:  # one every 0.1 s: some answered, some running, some late
            for thread in askers:
                thread.start()
                threading.Event().wait(0.1)

        starter = threading.Thread(target=start)
        starter.start()
        assert first.wait(30), outcomes  # the first answer is out: kill at once,
        backend.holding(1)  # with another request running
        stack.api.process.send_signal(signal.SIGKILL)
        stack.api.process.wait(10)
        backend.release()
        starter.join()
        for thread in askers:
            thread.join(timeout=60)
        assert len(outcomes) == 12
        assert set(outcomes.values()) <= {"right", "connection error"}, outcomes
        assert "right" in outcomes.values() and "connection error" in outcomes.values()
        # a new relay process on the same address and tables: the publisher comes back
        port = int(stack.url.rsplit(":", 1)[1])
        restarted = start_api(stack.api.env, port=port)
        try:
            answer = wait_until(lambda: _try(stack, "after the restart"), 30, "no answer")
            assert answer == "after the restart"
        finally:
            restarted.stop()


def _try(stack: Stack, text: str) -> str | None:
    try:
        return ask(stack, text)
    except openai.APIError:
        return None


@pytest.mark.parametrize("concurrency", [1, 4])
def test_back_to_back_requests_never_wait_out_a_poll_that_declared_their_model_full(
    stack: Stack, tmp_path: Path, publishers: list[PublisherProcess], concurrency: int
) -> None:
    """A publisher of two models: while one runs at its limit, its poll declares it full
    and waits; a request for it must not wait that poll out (25 s here)."""
    providers = [
        {"name": "a", "type": "echo", "maxConcurrency": concurrency},
        {"name": "b", "type": "echo"},
    ]
    config = publisher_config(stack, tmp_path, providers, pollWaitSeconds=25)
    publishers.append(start_publisher(config, tmp_path))
    wait_rows(stack, {"a": "active", "b": "active"})
    oai = openai.OpenAI(
        base_url=f"{stack.url}/v1", api_key=stack.client_token, max_retries=0, timeout=8
    )
    for i in range(12):
        answer = oai.chat.completions.create(
            model="a", messages=[{"role": "user", "content": f"turn {i}"}]
        )
        assert answer.choices[0].message.content == f"turn {i}"


def test_concurrent_requests_through_one_publisher_are_all_answered_and_recorded(
    stack: Stack, echo: str, tmp_path: Path
) -> None:
    """Eight clients at once through one publisher's single poll: the requests that come
    while its poll is on its way back are parked for its next poll; every client gets its
    own answer, and every task's record reaches DynamoDB (in batches, behind the answers)."""
    with publishing(stack, tmp_path, [provider(echo)], {"echo": "active"}):
        texts = [f"concurrent {i}" for i in range(24)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda t: ask(stack, t), texts))
        assert answers == texts

        def all_written() -> list[dict[str, Any]] | None:
            done = [t for t in tasks(stack) if t["state"]["S"] == "completed"]
            return done if len(done) == len(texts) else None

        written = wait_until(all_written, 10, "not every task's record was written")
        assert len({t["pk"]["S"] for t in written}) == len(texts)
