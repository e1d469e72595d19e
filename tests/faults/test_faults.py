"""Faults, with real processes: publishers, the relay and DynamoDB killed or frozen,
backends that hang, send garbage or stop mid-stream.

Per fault: the client gets an answer or a clear error within its budget, the publisher
recovers on its own, and nothing stays pending or claimed past a lease (read from the
tasks table). The relay is `natrelay dev` on a moto server in its own process
(tests/support/stack.py), with a 3 s heartbeat timeout, a 5 s lease and a sweep each
second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from natrelay.wire import ErrorCode, Paths, PollResponse
from natrelay_infra.moto_server import MotoProcess
from tests.publisher.running import PublisherProcess, start_publisher
from tests.support.backend import FakeBackend
from tests.support.net import serve, wait_until
from tests.support.stack import CLIENT_TOKEN, SWEEP_SECONDS, DevRelay

LEASE_SECONDS = 5
# A lease, a sweep, and the heartbeat timeout of a publisher that is gone.
SETTLE_SECONDS = LEASE_SECONDS + 2 * SWEEP_SECONDS + 3 + 2


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoProcess]:
    """moto in a process of its own, so that it can be frozen."""
    with MotoProcess() as server:
        yield server


@contextmanager
def running_relay(moto: MotoProcess, tmp_path: Path, **fields: Any) -> Iterator[DevRelay]:
    """`natrelay dev` on fresh tables; whatever happened, its log has no traceback."""
    running = DevRelay(moto.endpoint, tmp_path, **fields).start()
    try:
        yield running
    finally:
        moto.resume()
        running.stop()
        assert "Traceback" not in running.log(), running.log()


@pytest.fixture
def relay(moto: MotoProcess, tmp_path: Path) -> Iterator[DevRelay]:
    with running_relay(moto, tmp_path) as running:
        yield running


@pytest.fixture
def backend() -> Iterator[tuple[str, FakeBackend]]:
    state = FakeBackend()
    with serve(state.app()) as url:
        yield f"{url}/v1", state


def client(relay: DevRelay, timeout: float = 30) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{relay.url}/v1", api_key=CLIENT_TOKEN, max_retries=0, timeout=timeout
    )


def ask(relay: DevRelay, model: str, text: str = "hi") -> str | None:
    reply = client(relay).chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}]
    )
    return reply.choices[0].message.content


def ask_stream(relay: DevRelay, model: str, text: str = "hi", seen: list[str] | None = None) -> str:
    seen = [] if seen is None else seen
    stream = client(relay).chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            seen.append(chunk.choices[0].delta.content)
    return "".join(seen)


class Call:
    """A client call in a thread: its answer or its error, and how long it took."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.answer: Any = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        started = time.monotonic()
        try:
            self.answer = call()
        except Exception as exc:
            self.error = exc
        self.seconds = time.monotonic() - started

    def result(self, timeout: float) -> Call:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"no answer and no error within {timeout} s"
        return self


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def echo(name: str = "echo", delay_ms: int = 0) -> dict[str, Any]:
    return {"name": name, "type": "echo", "options": {"tokenDelayMs": delay_ms}}


def settled(relay: DevRelay) -> None:
    """Nothing pending or claimed, within a lease (and a sweep) from now."""
    wait_until(
        lambda: not relay.unsettled(),
        SETTLE_SECONDS,
        lambda: f"tasks still unfinished: {relay.unsettled()}",
        interval=0.25,
    )


def publish(
    relay: DevRelay,
    tmp_path: Path,
    publishers: list[PublisherProcess],
    providers: list[dict[str, Any]],
    name: str = "publisher",
    token: str | None = None,
    session: str | None = None,
) -> PublisherProcess:
    """A publisher process, once registered; `session` names its session file (default:
    its own), so that a restart can take the session back."""
    config = relay.publisher_config(
        providers, tmp_path / f"{session or name}.session", **({"token": token} if token else {})
    )
    publisher = start_publisher(config, tmp_path, name)
    publishers.append(publisher)
    publisher.wait_log("registered session")
    return publisher


def test_publisher_killed_mid_task_and_mid_stream(
    relay: DevRelay,
    tmp_path: Path,
    publishers: list[PublisherProcess],
    backend: tuple[str, FakeBackend],
) -> None:
    url, state = backend
    hang = {"name": "hang", "type": "openai", "baseUrl": url, "model": "hang"}
    providers = [echo("slow", delay_ms=200), hang]
    publisher = publish(relay, tmp_path, publishers, providers)
    seen: list[str] = []
    streamed = Call(lambda: ask_stream(relay, "slow", words(100), seen))
    plain = Call(lambda: ask(relay, "hang"))
    wait_until(lambda: seen and state.requests, 15, "both tasks running")
    publisher.process.kill()
    publisher.process.wait()
    # Each client hears of it once the relay sees the publisher gone: no answer hangs.
    for call in (streamed.result(15), plain.result(15)):
        assert isinstance(call.error, openai.APIError), call.error
        assert "offline" in str(call.error), call.error
        assert call.seconds < 15
    assert 0 < len(seen) < 100
    settled(relay)
    # Started again (as systemd would), it takes its session back and serves.
    publisher = publish(relay, tmp_path, publishers, providers, "again", session="publisher")
    assert ask(relay, "slow", "back again") == "back again"
    settled(relay)


def test_publisher_killed_and_restarted_at_once(
    moto: MotoProcess, tmp_path: Path, publishers: list[PublisherProcess]
) -> None:
    # A heartbeat timeout longer than the restart: the session never looks gone.
    with running_relay(moto, tmp_path, heartbeat_timeout=15) as relay:
        providers = [echo("slow", delay_ms=200)]
        publisher = publish(relay, tmp_path, publishers, providers)
        seen: list[str] = []
        streamed = Call(lambda: ask_stream(relay, "slow", words(60), seen))
        wait_until(lambda: seen, 15, "streaming")
        publisher.process.kill()
        publisher.process.wait()
        killed_at = time.monotonic()
        publish(
            relay, tmp_path, publishers, providers, "again", session="publisher"
        )  # as systemd would
        # Nobody runs the task the dead process held: within a lease it must end.
        wait_until(
            lambda: not relay.unsettled(),
            max(1.0, killed_at + LEASE_SECONDS + 2 * SWEEP_SECONDS + 2 - time.monotonic()),
            lambda: f"tasks still unfinished: {relay.unsettled()}",
            interval=0.25,
        )
        call = streamed.result(10)
        assert call.answer is not None or isinstance(call.error, openai.APIError)
        assert ask(relay, "slow", "still here") == "still here"


def test_relay_killed_while_publishers_poll(
    moto: MotoProcess, tmp_path: Path, publishers: list[PublisherProcess]
) -> None:
    # Down for less than the heartbeat timeout (as a restart is, against the default 90 s).
    with running_relay(moto, tmp_path, heartbeat_timeout=15) as relay:
        _relay_killed_while_publishers_poll(relay, tmp_path, publishers)


def _relay_killed_while_publishers_poll(
    relay: DevRelay, tmp_path: Path, publishers: list[PublisherProcess]
) -> None:
    # One publisher with a stored key, one with the simple mode's token.
    key = relay.publisher_key("fault box")
    keyed = publish(relay, tmp_path, publishers, [echo("keyed", 100)], "keyed", token=key)
    shared = publish(relay, tmp_path, publishers, [echo("shared", 100)], "shared")
    seen: list[str] = []
    streamed = Call(lambda: ask_stream(relay, "keyed", words(40), seen))
    wait_until(lambda: seen, 15, "streaming")
    relay.kill()
    # The client in flight is cut: a connection error at once, not a hang.
    call = streamed.result(10)
    assert call.error is not None and call.seconds < 10
    time.sleep(2)  # publishers poll a dead relay meanwhile
    relay.start()
    # They come back on their own: no restart, no new session.
    for publisher in (keyed, shared):
        publisher.wait_log("relay reachable again", timeout=30)
        assert publisher.process.poll() is None
        assert publisher.log().count("registered session") == 1
    # (its one slot may still be on the task the kill interrupted: 503 until that ends)
    wait_until(
        lambda: _answers(relay, "keyed", "after the crash"), 60, "keyed never answered again"
    )
    assert ask_stream(relay, "shared", "streams too") == "streams too"
    # The task the kill interrupted was finished by its publisher and accepted after.
    settled(relay)


@pytest.mark.parametrize("heartbeat_timeout", [15, 3])
def test_dynamodb_frozen_for_five_seconds(
    moto: MotoProcess, tmp_path: Path, publishers: list[PublisherProcess], heartbeat_timeout: int
) -> None:
    """No heartbeat can be written while DynamoDB is away: with a heartbeat timeout
    longer than the outage (as deployed: 90 s) requests made meanwhile are answered once
    it is back; with a shorter one they may be told the publisher is offline (503), and
    the publisher must find its way back on its own."""
    with running_relay(moto, tmp_path, heartbeat_timeout=heartbeat_timeout) as relay:
        publisher = publish(relay, tmp_path, publishers, [echo("echo", 20)])
        assert ask(relay, "echo", "before") == "before"
        moto.pause()
        try:
            time.sleep(1)
            plain = Call(lambda: ask(relay, "echo", "during"))
            streamed = Call(lambda: ask_stream(relay, "echo", "during the outage"))
            time.sleep(4)
        finally:
            moto.resume()
        for call, text in ((plain, "during"), (streamed, "during the outage")):
            call.result(30)
            if heartbeat_timeout > 5:
                assert call.answer == text, call.error
            else:
                assert call.answer == text or (
                    isinstance(call.error, openai.APIStatusError) and call.error.status_code == 503
                ), call.error
        wait_until(lambda: _answers(relay, "echo", "after"), 20, "the publisher never came back")
        assert publisher.process.poll() is None
        settled(relay)


def _answers(relay: DevRelay, model: str, text: str) -> bool:
    try:
        return ask(relay, model, text) == text
    except openai.APIStatusError as exc:
        assert exc.status_code == 503, exc  # offline for a moment, nothing else
        return False


def test_backends_that_hang_send_garbage_or_stop_mid_stream(
    relay: DevRelay,
    tmp_path: Path,
    publishers: list[PublisherProcess],
    backend: tuple[str, FakeBackend],
) -> None:
    url, _ = backend

    def openai_provider(name: str, model: str) -> dict[str, Any]:
        return {"name": name, "type": "openai", "baseUrl": url, "model": model, "timeoutSeconds": 2}

    providers = [
        openai_provider("hang", "hang"),
        openai_provider("garbage", "garbage"),
        openai_provider("bad-json", "bad-json"),
        openai_provider("cut", "truncate"),
        echo(),
    ]
    publish(relay, tmp_path, publishers, providers)
    expected = {
        ("hang", False): "the backend of hang did not answer within 2 s",
        ("hang", True): "the backend of hang sent nothing for 2 s mid-stream",
        ("garbage", True): "the backend sent invalid JSON in its stream",
        ("bad-json", False): "the backend answered invalid JSON",
        ("cut", True): "the backend closed the stream early",
    }
    calls = {
        (model, stream): Call(
            (lambda m=model: ask_stream(relay, m)) if stream else (lambda m=model: ask(relay, m))
        )
        for model, stream in expected
    }
    for (model, stream), call in calls.items():
        call.result(15)
        assert isinstance(call.error, openai.APIError), (model, stream, call.answer)
        assert expected[model, stream] in str(call.error), (model, stream, call.error)
        if not stream:
            assert isinstance(call.error, openai.APIStatusError)
            assert call.error.status_code == 502
            assert call.error.code == ErrorCode.BACKEND_ERROR
    # The publisher goes on serving.
    assert ask(relay, "echo", "unharmed") == "unharmed"
    settled(relay)


class LossyGateway:
    """Between a publisher and the relay: forwards everything, but answers the next
    `lose` polls that carry tasks 504, as a gateway that timed out would — the relay has
    claimed those tasks, and the publisher never hears of them."""

    def __init__(self, relay_url: str) -> None:
        self.relay_url = relay_url
        self.lose = 0
        self.lost: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        request = Request(scope, receive)
        async with httpx.AsyncClient(base_url=self.relay_url, timeout=60) as http:
            answer = await http.request(
                request.method,
                request.url.path,
                params=request.query_params,
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
                content=await request.body(),
            )
        response: Response = Response(
            answer.content, answer.status_code, media_type=answer.headers.get("content-type")
        )
        carries = request.url.path in (Paths.POLL, Paths.CLAIM)  # long-poll, or rung
        if carries and answer.is_success and self.lose:
            tasks = PollResponse.model_validate(answer.json()).tasks
            if tasks:
                self.lose -= 1
                self.lost += [task.id for task in tasks]
                response = JSONResponse({"message": "Endpoint request timed out"}, 504)
        await response(scope, receive, send)


def test_a_poll_answer_lost_on_the_way(
    relay: DevRelay, tmp_path: Path, publishers: list[PublisherProcess]
) -> None:
    gateway = LossyGateway(relay.url)
    with serve(gateway) as gateway_url:
        config = relay.publisher_config([echo()], tmp_path / "publisher.session")
        config["relay"]["url"] = gateway_url
        config["relay"]["doorbell"] = {"enabled": False}  # long-polls through the gateway
        publishers.append(publisher := start_publisher(config, tmp_path))
        publisher.wait_log("registered session")
        gateway.lose = 1
        call = Call(lambda: ask(relay, "echo", "lost once"))
        wait_until(lambda: gateway.lost, 10, "no poll answer carried the task")
        # Nothing of it was sent: handed out again, it is answered within a lease or so.
        done = call.result(LEASE_SECONDS + 2 * SWEEP_SECONDS + 5)
        assert done.answer == "lost once", done.error
        settled(relay)
