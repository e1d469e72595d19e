"""A real publisher process against the real relay API (uvicorn on moto), end to end."""

from __future__ import annotations

import json
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from natrelay.wire import ErrorCode, fingerprint
from natrelay_infra.wake_controller import WakeController
from tests.publisher.running import (
    PublisherProcess,
    publisher_config,
    rows,
    start_publisher,
    wait_rows,
)
from tests.support.backend import REPLY, FakeBackend
from tests.support.net import serve, wait_until
from tests.support.stack import Stack, dynamodb_client, start_api

pytestmark = pytest.mark.slow


@pytest.fixture
def backend() -> Iterator[tuple[str, FakeBackend]]:
    state = FakeBackend()
    with serve(state.app()) as url:
        yield url + "/v1", state


def client(stack: Stack) -> OpenAI:
    return OpenAI(base_url=stack.url + "/v1", api_key=stack.client_token, max_retries=0, timeout=30)


def ask(stack: Stack, model: str, text: str = "hi", **fields: Any) -> Any:
    return client(stack).chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], **fields
    )


def ask_stream(stack: Stack, model: str, text: str = "hi", **fields: Any) -> str:
    stream = client(stack).chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], stream=True, **fields
    )
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def llama(url: str, **fields: Any) -> dict[str, Any]:
    return {"name": "llama3", "type": "openai", "baseUrl": url, "model": "backend-model", **fields}


ECHO = {"name": "echo", "type": "echo"}


def test_register_and_infer(
    stack: Stack,
    tmp_path: Path,
    backend: tuple[str, FakeBackend],
    publishers: list[PublisherProcess],
) -> None:
    url, state = backend
    config = publisher_config(
        stack,
        tmp_path,
        [
            llama(url, tier="gpu", description="Llama on the lab box"),
            ECHO,
            {"name": "hidden", "type": "echo", "publish": False},
        ],
    )
    publishers.append(publisher := start_publisher(config, tmp_path))
    seen = wait_rows(stack, {"llama3": "active", "echo": "active"})
    assert "hidden" not in seen
    # (clients never read the backend's model id: docs/relay.md)
    assert seen["llama3"]["tier"] == "gpu" and "model" not in seen["llama3"]

    reply = ask(stack, "llama3", seed=5)
    assert reply.choices[0].message.content == REPLY
    assert reply.usage is not None and reply.usage.total_tokens == 11
    assert state.requests[-1]["model"] == "backend-model" and state.requests[-1]["seed"] == 5
    assert ask_stream(stack, "llama3") == REPLY
    text = "  spaced   out\n words  "
    assert ask_stream(stack, "echo", text) == text
    assert ask(stack, "echo", text).choices[0].message.content == text
    # Too large to inline in a poll answer: the publisher fetches the request on its own.
    big = "word " * 250_000
    assert ask(stack, "echo", big).choices[0].message.content == big
    session = tmp_path / "state" / "session.json"
    assert stat.S_IMODE(session.stat().st_mode) == 0o600
    assert publisher.stop() == 0


def test_backend_errors_reach_the_client(
    stack: Stack,
    tmp_path: Path,
    backend: tuple[str, FakeBackend],
    publishers: list[PublisherProcess],
) -> None:
    url, _ = backend
    config = publisher_config(
        stack,
        tmp_path,
        [
            llama(url, name="picky", model="fail-400"),
            llama(url, name="burning", model="fail-500"),
            llama(url, name="cut", model="truncate"),
        ],
    )
    publishers.append(start_publisher(config, tmp_path))
    wait_rows(stack, {"picky": "active", "burning": "active", "cut": "active"})
    with pytest.raises(openai.BadRequestError, match="this model does not exist"):
        ask(stack, "picky")
    with pytest.raises(openai.APIStatusError, match=r"backend answered 500 \(its") as caught:
        ask(stack, "burning")
    assert caught.value.status_code == 502
    # A stream has begun (HTTP 200) before the backend fails: the error comes as an event.
    # A backend that closes its stream mid-way: the text so far, then an error, not a
    # shortened answer that looks whole.
    received: list[str] = []
    with pytest.raises(openai.APIError, match="the backend closed the stream early"):
        for chunk in client(stack).chat.completions.create(
            model="cut", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(received) == REPLY


def test_a_backend_that_does_not_answer_is_unavailable(
    stack: Stack,
    tmp_path: Path,
    controller: tuple[str, WakeController],
    publishers: list[PublisherProcess],
) -> None:
    url, state = controller
    # No wake recipe: nothing can bring it back but itself.
    flaky = {"name": "flaky", "type": "echo", "options": {"availabilityUrl": f"{url}/ready"}}
    publishers.append(start_publisher(publisher_config(stack, tmp_path, [flaky, ECHO]), tmp_path))
    wait_rows(stack, {"flaky": "unavailable", "echo": "active"})
    assert [m.id for m in client(stack).models.list()] == ["echo"]
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        ask(stack, "flaky")
    assert time.monotonic() - started < 2, "not failed fast"
    assert caught.value.status_code == 503
    assert caught.value.code == ErrorCode.BACKEND_UNAVAILABLE
    assert "the backend of 'flaky' is not answering its publisher" in caught.value.message
    state.awake = True
    # Back within seconds. (Not at once: a poll that read the session before the
    # heartbeat saying `active` can write `unavailable` back, until the next heartbeat
    # repeats it — the relay's side of issue 12 item 11.)
    wait_until(lambda: answers(stack, "flaky", "back"), 10, "flaky never came back")
    state.awake = False
    wait_rows(stack, {"flaky": "unavailable"})


def test_relay_down_then_up(
    stack: Stack, tmp_path: Path, publishers: list[PublisherProcess]
) -> None:
    publishers.append(
        publisher := start_publisher(publisher_config(stack, tmp_path, [ECHO]), tmp_path)
    )
    wait_rows(stack, {"echo": "active"})
    port = int(stack.url.rsplit(":", 1)[1])
    stack.api.stop()
    publisher.wait_log("relay unreachable: ")
    time.sleep(2)
    api = start_api(stack.env, port=port)
    try:
        publisher.wait_log("relay reachable again", timeout=40)
        assert ask_stream(stack, "echo", "still here") == "still here"
        log = publisher.log()
        # One line per change of state, not one per failed request.
        assert log.count("relay unreachable: ") == 1
        assert log.count("relay reachable again") == 1
        assert publisher.stop() == 0
    finally:
        api.stop()


def test_session_lost_by_the_relay_is_registered_again(
    stack: Stack, tmp_path: Path, publishers: list[PublisherProcess]
) -> None:
    publishers.append(
        publisher := start_publisher(publisher_config(stack, tmp_path, [ECHO]), tmp_path)
    )
    wait_rows(stack, {"echo": "active"})
    session = row_sessions(stack)["echo"]
    publisher.wait_log(f"registered session {fingerprint(session)}")
    dynamodb_client(stack.moto_endpoint).delete_item(
        TableName=stack.tables.tasks, Key={"pk": {"S": f"session#{session}"}, "sk": {"S": "m"}}
    )
    publisher.wait_log(f"the relay lost session {fingerprint(session)}: registering again")
    publisher.wait_log(f"registered session {fingerprint(session)}", count=2)
    assert ask(stack, "echo", "found again").choices[0].message.content == "found again"
    assert publisher.stop() == 0


def test_restart_keeps_the_session_and_rows(
    stack: Stack, tmp_path: Path, publishers: list[PublisherProcess]
) -> None:
    config = publisher_config(stack, tmp_path, [ECHO, {**ECHO, "name": "echo2"}])
    publishers.append(first := start_publisher(config, tmp_path, "first"))
    wait_rows(stack, {"echo": "active", "echo2": "active"})
    session = row_sessions(stack)["echo"]
    assert row_sessions(stack)["echo2"] == session
    # logged once the session file is saved; by its fingerprint, never the id (a secret)
    first.wait_log(f"registered session {fingerprint(session)}")
    assert session not in first.log()
    # Killed without deregistering: its rows stay live, and only its own session may take
    # them back.
    first.process.kill()
    first.process.wait()
    # Right away: the dead process's last long-poll must not claim the next task.
    publishers.append(second := start_publisher(config, tmp_path, "second"))
    second.wait_log(f"registered session {fingerprint(session)}")
    wait_rows(stack, {"echo": "active", "echo2": "active"})
    assert set(row_sessions(stack).values()) == {session}
    assert ask(stack, "echo2", "again").choices[0].message.content == "again"
    # A clean stop deregisters; the next start takes the same rows back once more.
    assert second.stop() == 0
    wait_rows(stack, {"echo": "inactive", "echo2": "inactive"})
    publishers.append(third := start_publisher(config, tmp_path, "third"))
    third.wait_log(f"registered session {fingerprint(session)}")
    wait_rows(stack, {"echo": "active", "echo2": "active"})
    assert third.stop() == 0


def test_sigterm_lets_the_task_in_flight_finish(
    stack: Stack, tmp_path: Path, publishers: list[PublisherProcess]
) -> None:
    slow = {"name": "slow", "type": "echo", "options": {"tokenDelayMs": 100}}
    publishers.append(
        publisher := start_publisher(publisher_config(stack, tmp_path, [slow]), tmp_path)
    )
    wait_rows(stack, {"slow": "active"})
    text = " ".join(f"w{i}" for i in range(30))
    received: list[str] = []
    first_chunk = threading.Event()

    def read() -> None:
        stream = client(stack).chat.completions.create(
            model="slow", messages=[{"role": "user", "content": text}], stream=True
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
                first_chunk.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert first_chunk.wait(20)
    publisher.process.send_signal(signal.SIGTERM)
    reader.join(30)
    assert "".join(received) == text
    assert publisher.process.wait(20) == 0
    log = publisher.log()
    assert "waiting up to 15 s for 1 task(s) in flight" in log
    assert "deregistered session" in log
    wait_rows(stack, {"slow": "inactive"}, timeout=5)


def test_a_second_signal_stops_at_once_yet_cleanly(
    stack: Stack, tmp_path: Path, publishers: list[PublisherProcess]
) -> None:
    slow = {"name": "slow", "type": "echo", "options": {"tokenDelayMs": 200}}
    config = publisher_config(stack, tmp_path, [slow], shutdownGraceSeconds=60)
    publishers.append(publisher := start_publisher(config, tmp_path))
    wait_rows(stack, {"slow": "active"})
    errors: list[BaseException] = []
    first_chunk = threading.Event()

    def read() -> None:
        try:
            stream = client(stack).chat.completions.create(
                model="slow", messages=[{"role": "user", "content": words(100)}], stream=True
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    first_chunk.set()
        except openai.APIError as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    assert first_chunk.wait(20)
    publisher.process.send_signal(signal.SIGINT)
    publisher.wait_log("waiting up to 60 s for 1 task(s) in flight")
    stopped_at = time.monotonic()
    publisher.process.send_signal(signal.SIGINT)
    assert publisher.process.wait(10) == 0
    assert time.monotonic() - stopped_at < 6
    reader.join(10)
    log = publisher.log()
    assert "Traceback" not in log, log
    assert "SIGINT again: stopping now" in log
    assert "deregistered session" in log
    # The client is told at once, not after its own timeout.
    assert errors and "the publisher shut down before the task finished" in str(errors[0])
    wait_rows(stack, {"slow": "inactive"}, timeout=5)
    assert not unfinished_tasks(stack)


def test_max_concurrency(
    stack: Stack,
    tmp_path: Path,
    backend: tuple[str, FakeBackend],
    publishers: list[PublisherProcess],
) -> None:
    url, state = backend
    config = publisher_config(stack, tmp_path, [llama(url, model="delay", maxConcurrency=2)])
    publishers.append(start_publisher(config, tmp_path))
    wait_rows(stack, {"llama3": "active"})
    answers: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: answers.append(ask(stack, "llama3").choices[0].message.content)
        )
        for _ in range(5)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == [REPLY] * 5
    assert state.max_active == 2
    assert time.monotonic() - started >= 3 * 0.4


def test_wake_on_demand(
    stack: Stack,
    tmp_path: Path,
    controller: tuple[str, WakeController],
    publishers: list[PublisherProcess],
) -> None:
    url, state = controller
    state.wake_delay = 1.0
    sleepy = {
        "name": "sleepy",
        "type": "echo",
        "options": {"availabilityUrl": f"{url}/ready"},
        "wake": {"type": "http", "url": f"{url}/wake", "maxWaitSeconds": 20},
        "sleep": {"type": "http", "url": f"{url}/sleep"},
        "sleepAfterIdleSeconds": 2,
    }
    broken = {
        "name": "broken",
        "type": "echo",
        "options": {"availabilityUrl": "http://127.0.0.1:9/never-up"},
        "wake": {"type": "http", "url": f"{url}/fail", "maxWaitSeconds": 20},
    }
    publishers.append(
        publisher := start_publisher(publisher_config(stack, tmp_path, [sleepy, broken]), tmp_path)
    )
    wait_rows(stack, {"sleepy": "hibernating", "broken": "hibernating"})

    # Three requests at once share one wake.
    answers: list[str] = []
    threads = [
        threading.Thread(
            target=lambda i=i: answers.append(ask_stream(stack, "sleepy", f"hello {i}"))
        )
        for i in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(40)
    assert sorted(answers) == ["hello 0", "hello 1", "hello 2"]
    assert len(state.wake_calls) == 1
    assert rows(stack)["sleepy"]["status"] == "active"

    # Idle for 2 s: the sleep recipe runs and the row is reported hibernating.
    publisher.wait_log("sleepy is asleep", timeout=15)
    wait_rows(stack, {"sleepy": "hibernating"}, timeout=10)
    assert ask(stack, "sleepy", "back").choices[0].message.content == "back"
    assert len(state.wake_calls) == 2

    with pytest.raises(openai.APIStatusError) as caught:
        ask(stack, "broken")
    assert caught.value.status_code == 503
    assert caught.value.message.endswith(
        "- wake of broken failed: the wake request answered 500 (its body is in the "
        "publisher's debug log)"
    )
    assert rows(stack)["broken"]["status"] == "hibernating"


def test_a_second_publisher_on_the_same_session_file_refuses_to_start(
    tmp_path: Path, publishers: list[PublisherProcess]
) -> None:
    # No relay needed: the lock is taken before the first call to it.
    home = {"HOME": str(tmp_path / "home")}
    config = {"relay": {"url": "http://127.0.0.1:9", "token": "t"}, "providers": [ECHO]}
    path = tmp_path / "natrelay.yaml"
    publishers.append(
        first := start_publisher(config, tmp_path, "first", config_path=path, env=home)
    )
    first.wait_log("relay unreachable")
    publishers.append(
        second := start_publisher(config, tmp_path, "second", config_path=path, env=home)
    )
    assert second.process.wait(20) == 1
    log = second.log()
    assert f"another publisher (pid {first.process.pid}) is using the session file" in log
    assert "Traceback" not in log
    assert first.process.poll() is None
    # Another config file is another session: it starts.
    other = tmp_path / "other.yaml"
    publishers.append(
        third := start_publisher(config, tmp_path, "third", config_path=other, env=home)
    )
    third.wait_log("relay unreachable")
    # The lock dies with its holder, even by SIGKILL.
    first.process.kill()
    first.process.wait()
    publishers.append(
        fourth := start_publisher(config, tmp_path, "fourth", config_path=path, env=home)
    )
    fourth.wait_log("relay unreachable")
    assert fourth.stop() == 0 and third.stop() == 0


def test_a_held_name_does_not_block_the_others(
    stack: Stack, tmp_path: Path, publishers: list[PublisherProcess]
) -> None:
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    keys = f"{stack.url}/api/v1/keys"
    other = httpx.post(keys, headers=admin, json={"role": "publisher", "label": "other"})
    assert other.status_code == 201, other.text
    shared = {**ECHO, "name": "shared"}
    first_config = publisher_config(
        stack, tmp_path, [shared], sessionFile=str(tmp_path / "1"), token=other.json()["secret"]
    )
    publishers.append(first := start_publisher(first_config, tmp_path, "first"))
    wait_rows(stack, {"shared": "active"})
    # Another key: `shared` is refused (409 name_owned), `mine` is published.
    mine = {**ECHO, "name": "mine"}
    second_config = publisher_config(
        stack, tmp_path, [shared, mine], sessionFile=str(tmp_path / "2")
    )
    publishers.append(second := start_publisher(second_config, tmp_path, "second"))
    wait_rows(stack, {"mine": "active", "shared": "active"})
    assert ask(stack, "mine", "free").choices[0].message.content == "free"
    # The held one is reported on every retry, not once and then silence.
    second.wait_log("shared is held by another publisher session", count=3)
    assert "name_owned" in second.log()
    sessions = row_sessions(stack)
    assert sessions["shared"] != sessions["mine"]
    # Once its holder is gone and an admin releases the name, the retry takes it over,
    # into the same session.
    assert first.stop() == 0
    released = httpx.delete(f"{stack.url}/api/v1/llms/shared", headers=admin)
    assert released.status_code in (200, 204), released.text
    wait_until(lambda: row_sessions(stack).get("shared") == sessions["mine"], 20)
    wait_rows(stack, {"mine": "active", "shared": "active"})
    assert ask(stack, "shared", "mine now").choices[0].message.content == "mine now"
    count = second.log().count("is held by another publisher session")
    time.sleep(3)
    assert second.log().count("is held by another publisher session") == count
    assert second.stop() == 0


def test_refused_token_exits_non_zero(
    stack: Stack, tmp_path: Path, publishers: list[PublisherProcess]
) -> None:
    config = publisher_config(stack, tmp_path, [ECHO], token="not-the-token")
    publishers.append(publisher := start_publisher(config, tmp_path))
    assert publisher.process.wait(20) == 1
    assert "the relay refused the publish token (401)" in publisher.log()
    assert not list((tmp_path / "state").glob("*.lock"))  # a failed start leaves none


def answers(stack: Stack, model: str, text: str) -> bool:
    """The model answers `text`; False while it is unavailable (503)."""
    try:
        return bool(ask(stack, model, text).choices[0].message.content == text)
    except openai.APIStatusError as exc:
        assert exc.status_code == 503, exc
        return False


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def unfinished_tasks(stack: Stack) -> list[dict[str, Any]]:
    """Tasks still pending or claimed, read from the table."""
    items = dynamodb_client(stack.moto_endpoint).scan(TableName=stack.tables.tasks)["Items"]
    return [i for i in items if i.get("state", {}).get("S") in ("pending", "claimed")]


def row_sessions(stack: Stack) -> dict[str, str]:
    """The session holding each row, read from the table (clients never see session ids)."""
    items = dynamodb_client(stack.moto_endpoint).scan(TableName=stack.tables.llms)["Items"]
    return {i["name"]["S"]: i["sessionId"]["S"] for i in items if "sessionId" in i}


def test_json_logs_for_service_managers(
    stack: Stack, tmp_path: Path, publishers: list[PublisherProcess]
) -> None:
    config = publisher_config(stack, tmp_path, [ECHO])
    publishers.append(pub := start_publisher(config, tmp_path, "json", "--log-format", "json"))
    pub.wait_log("registered session")
    assert ask(stack, "echo", "logged").choices[0].message.content == "logged"
    assert pub.stop() == 0
    lines = [json.loads(line) for line in pub.log().splitlines() if line.startswith("{")]
    messages = [line["message"] for line in lines]
    assert any(m.startswith("registered session") for m in messages)
    assert any("complete echo -> 200" in m for m in messages)
    assert all(line["level"] and line["time"] and line["name"] for line in lines)
