"""The daemon's scheduling against a scripted relay: poll sizes, slots, wakes, statuses."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from natrelay.wire import ErrorCode
from natrelay_infra.wake_controller import WakeController
from natrelay_publisher.catalog import Catalog
from natrelay_publisher.config import parse_config
from natrelay_publisher.daemon import Publisher, _plain_http_elsewhere
from natrelay_publisher.errors import RelayCallError
from tests.publisher.fake_relay import FakeRelay, infer_task, wake_task
from tests.support.net import serve


def publisher(
    url: str,
    tmp_path: Path,
    *providers: dict[str, Any],
    catalog: Catalog | None = None,
    **relay: Any,
) -> Publisher:
    return Publisher(
        parse_config(
            {
                "relay": {
                    "url": url,
                    "token": "t",
                    "sessionFile": str(tmp_path / "session.json"),
                    "heartbeatSeconds": 0.3,
                    "pollWaitSeconds": 0.5,
                    "shutdownGraceSeconds": 5,
                    **relay,
                },
                "providers": list(providers),
            }
        ),
        catalog=catalog,
    )


def run(pub: Publisher, scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(pub.run(stop))
        try:
            await scenario()
        finally:
            stop.set()
            await asyncio.wait_for(running, 30)

    asyncio.run(main())


async def until(check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def sleepy(url: str, wake_path: str = "/wake", **fields: Any) -> dict[str, Any]:
    return {
        "name": "sleepy",
        "type": "echo",
        "maxConcurrency": 1,
        "options": {"availabilityUrl": f"{url}/ready"},
        "wake": {"type": "http", "url": f"{url}{wake_path}", "maxWaitSeconds": 20},
        **fields,
    }


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_no_polling_while_every_slot_is_busy(relay: tuple[str, FakeRelay], tmp_path: Path) -> None:
    url, fake = relay
    slow = {"name": "slow", "type": "echo", "maxConcurrency": 1, "options": {"tokenDelayMs": 50}}
    fake.add(infer_task("t1", "slow", words(20), stream=True))

    async def scenario() -> None:
        await until(lambda: "t1" in fake.results())

    run(publisher(url, tmp_path, slow), scenario)
    times = {
        kind: [t for t, k, b in fake.events if k == kind]
        for kind in ("poll", "chunks", "result", "heartbeat")
    }
    busy = (times["chunks"][0], times["result"][0])
    assert busy[1] - busy[0] >= 0.8
    assert not [t for t in times["poll"] if busy[0] < t < busy[1]]
    assert {p["maxTasks"] for p in fake.calls("poll")} == {1}
    # Still alive for the relay meanwhile: heartbeats went on.
    assert len([t for t in times["heartbeat"] if busy[0] < t < busy[1]]) >= 2


def test_tasks_beyond_max_concurrency_wait_their_turn(
    relay: tuple[str, FakeRelay], tmp_path: Path
) -> None:
    url, fake = relay
    fake.ignore_max_tasks = True
    one = {"name": "one", "type": "echo", "maxConcurrency": 1, "options": {"tokenDelayMs": 40}}
    fake.add(*(infer_task(f"t{i}", "one", words(5), stream=True) for i in range(3)))

    async def scenario() -> None:
        await until(lambda: len(fake.results()) == 3)

    run(publisher(url, tmp_path, one), scenario)
    spans = sorted(
        (
            min(t for t, k, b in fake.events if k == "chunks" and b["task"] == task),
            max(t for t, k, b in fake.events if k == "result" and b["task"] == task),
        )
        for task in ("t0", "t1", "t2")
    )
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))
    assert {r["status"] for r in fake.results().values()} == {200}


def test_infer_waits_for_a_wake_task_that_comes_later(
    relay: tuple[str, FakeRelay], controller: tuple[str, WakeController], tmp_path: Path
) -> None:
    url, fake = relay
    wake_url, state = controller
    fake.add(infer_task("t1", "sleepy", "hello", wake_id="w1"))

    async def scenario() -> None:
        await until(lambda: not fake.queue and len(fake.calls("poll")) >= 1)
        await asyncio.sleep(0.5)
        assert "t1" not in fake.results()
        # The only slot is held by t1, yet the publisher keeps polling: the wake must arrive.
        fake.add(wake_task("w1", "sleepy"))
        await until(lambda: {"t1", "w1"} <= set(fake.results()))

    run(publisher(url, tmp_path, sleepy(wake_url)), scenario)
    [registered] = fake.calls("register")
    assert registered["providers"][0]["initialStatus"] == "hibernating"
    assert registered["providers"][0]["wakeMaxWaitSeconds"] == 20
    results = fake.results()
    assert results["w1"]["status"] == 200 and results["w1"]["body"]["ok"] is True
    assert results["t1"]["status"] == 200
    assert results["t1"]["body"]["choices"][0]["message"]["content"] == "hello"
    assert len(state.wake_calls) == 1


def test_failed_wake_fails_the_waiting_infer(
    relay: tuple[str, FakeRelay], controller: tuple[str, WakeController], tmp_path: Path
) -> None:
    url, fake = relay
    wake_url, _ = controller
    fake.add(wake_task("w1", "sleepy"), infer_task("t1", "sleepy", "hello", wake_id="w1"))

    async def scenario() -> None:
        await until(lambda: {"t1", "w1"} <= set(fake.results()))

    run(publisher(url, tmp_path, sleepy(wake_url, "/fail", maxConcurrency=2)), scenario)
    results = fake.results()
    for task in ("w1", "t1"):
        assert results[task]["status"] == 503
        error = results[task]["error"]
        assert error["code"] == ErrorCode.WAKE_FAILED
        assert error["message"] == (
            "wake of sleepy failed: the wake request answered 500 (its body is in the "
            "publisher's debug log)"
        )


def test_heartbeat_reports_status_changes_of_wakeable_providers(
    relay: tuple[str, FakeRelay], controller: tuple[str, WakeController], tmp_path: Path
) -> None:
    url, fake = relay
    wake_url, state = controller
    plain = {
        "name": "plain",
        "type": "echo",
        "options": {"availabilityUrl": "http://127.0.0.1:9/never"},
    }

    def reported() -> list[dict[str, str]]:
        return [h["statuses"] for h in fake.calls("heartbeat") if h["statuses"]]

    async def scenario() -> None:
        await until(lambda: fake.rows.get("sleepy") == "hibernating")
        state.awake = True
        await until(lambda: fake.rows["sleepy"] == "active")
        state.awake = False
        await until(lambda: fake.rows["sleepy"] == "hibernating")

    run(publisher(url, tmp_path, sleepy(wake_url), plain), scenario)
    assert reported() == [{"sleepy": "active"}, {"sleepy": "hibernating"}]
    # Down without a wake recipe: published unavailable (the relay answers 503 at once).
    [registered] = fake.calls("register")
    assert registered["providers"][1]["initialStatus"] == "unavailable"
    assert registered["providers"][1]["wakeMaxWaitSeconds"] is None


def test_a_backend_without_wake_recipe_is_reported_unavailable_while_down(
    relay: tuple[str, FakeRelay], controller: tuple[str, WakeController], tmp_path: Path
) -> None:
    url, fake = relay
    wake_url, state = controller
    state.awake = True
    plain = {"name": "plain", "type": "echo", "options": {"availabilityUrl": f"{wake_url}/ready"}}

    def reported() -> list[dict[str, str]]:
        return [h["statuses"] for h in fake.calls("heartbeat") if h["statuses"]]

    async def scenario() -> None:
        await until(lambda: fake.rows.get("plain") == "active")
        state.awake = False
        await until(lambda: fake.rows["plain"] == "unavailable")
        state.awake = True
        await until(lambda: fake.rows["plain"] == "active")

    run(publisher(url, tmp_path, plain), scenario)
    assert reported() == [{"plain": "unavailable"}, {"plain": "active"}]


def test_shutdown_fails_what_outlives_the_grace(
    relay: tuple[str, FakeRelay], tmp_path: Path
) -> None:
    url, fake = relay
    slow = {"name": "slow", "type": "echo", "options": {"tokenDelayMs": 100}}
    fake.add(infer_task("t1", "slow", words(50), stream=True))

    async def scenario() -> None:
        await until(lambda: bool(fake.calls("chunks")))

    run(publisher(url, tmp_path, slow, shutdownGraceSeconds=0.3), scenario)
    result = fake.results()["t1"]
    assert result["status"] == 503
    assert result["error"]["code"] == ErrorCode.PUBLISHER_OFFLINE
    kinds = [k for _, k, _ in fake.events]
    assert kinds.index("deregister") > kinds.index("result")


def test_task_for_a_model_we_do_not_serve(relay: tuple[str, FakeRelay], tmp_path: Path) -> None:
    url, fake = relay
    fake.add(infer_task("t1", "nope", "hi"))

    async def scenario() -> None:
        await until(lambda: "t1" in fake.results())

    run(publisher(url, tmp_path, {"name": "echo", "type": "echo"}), scenario)
    error = fake.results()["t1"]["error"]
    assert (fake.results()["t1"]["status"], error["code"]) == (404, ErrorCode.MODEL_NOT_FOUND)


def test_stop_while_the_relay_is_unreachable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pub = publisher("http://127.0.0.1:9", tmp_path, {"name": "echo", "type": "echo"})

    async def scenario() -> None:
        await asyncio.sleep(2)  # several failed registrations, with backoff

    started = time.monotonic()
    with caplog.at_level("INFO", logger="natrelay.publisher"):
        run(pub, scenario)
    assert time.monotonic() - started < 8
    unreachable = [r for r in caplog.records if r.getMessage().startswith("relay unreachable")]
    assert len(unreachable) == 1
    assert pub.session.id is None


def test_no_spinning_on_a_relay_that_does_not_wait(
    relay: tuple[str, FakeRelay], tmp_path: Path
) -> None:
    url, fake = relay
    fake.instant = True

    async def scenario() -> None:
        await asyncio.sleep(2)

    run(publisher(url, tmp_path, {"name": "echo", "type": "echo"}, pollWaitSeconds=20), scenario)
    assert 2 <= len(fake.calls("poll")) <= 6


def test_stop_during_a_registration_in_flight_undoes_it(
    relay: tuple[str, FakeRelay], tmp_path: Path
) -> None:
    url, fake = relay
    fake.register_delay = 1.0

    async def scenario() -> None:
        await until(lambda: bool(fake.calls("register")))

    run(publisher(url, tmp_path, {"name": "echo", "type": "echo"}), scenario)
    assert [k for _, k, _ in fake.events] == ["register", "deregister"]
    assert fake.rows == {"echo": "inactive"}


def test_errors_reach_the_relay_without_secrets(
    relay: tuple[str, FakeRelay],
    controller: tuple[str, WakeController],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What a client can read (the relay's copy of an error) names the cause, never a
    secret: no URL query, no userinfo, no backend address, no command output."""
    url, fake = relay
    wake_url, _ = controller
    leak = "http://admin:hunter2@10.0.0.5:8000/v1/chat?token=SECRET1"

    async def leaky_backend(scope: Any, receive: Any, send: Any) -> None:
        body = json.dumps({"error": {"message": f"upstream {leak} failed"}}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 500, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    stderr = tmp_path / "wake.py"
    stderr.write_text(
        "import sys\nprint('login failed for token=SECRET2', file=sys.stderr)\nsys.exit(2)\n"
    )
    never = {"availabilityUrl": "http://127.0.0.1:9/never"}
    with serve(leaky_backend) as backend_url:
        providers = [
            {"name": "leaky", "type": "openai", "baseUrl": f"{backend_url}/v1", "model": "m"},
            {
                "name": "down",
                "type": "openai",
                "baseUrl": "http://user:SECRET3@localhost:9/v1",
                "model": "m",
            },
            {
                "name": "webhook",
                "type": "echo",
                "options": never,
                "wake": {"type": "http", "url": f"{wake_url}/fail?apikey=SECRET4"},
            },
            {
                "name": "unreachable-hook",
                "type": "echo",
                "options": never,
                "wake": {"type": "http", "url": "http://u:SECRET5@127.0.0.1:9/hook?k=SECRET6"},
            },
            {
                "name": "script",
                "type": "echo",
                "options": never,
                "wake": {"type": "command", "command": sys.executable, "args": [str(stderr)]},
            },
        ]
        fake.add(
            infer_task("t-leaky", "leaky", "hi"),
            infer_task("t-down", "down", "hi"),
            wake_task("w-webhook", "webhook"),
            wake_task("w-hook", "unreachable-hook"),
            wake_task("w-script", "script"),
        )

        async def scenario() -> None:
            await until(lambda: len(fake.results()) == 5, timeout=30)

        with caplog.at_level("DEBUG", logger="natrelay.publisher"):
            run(publisher(url, tmp_path, *providers), scenario)
    messages = {task: r["error"]["message"] for task, r in fake.results().items()}
    sent = json.dumps(fake.events)
    for secret in ("SECRET", "hunter2", "apikey", "token=", "localhost", "10.0.0.5:8000/v1/chat?"):
        assert secret not in sent, (secret, messages)
    # The cause is still there.
    assert messages["t-leaky"] == "upstream http://10.0.0.5:8000/v1/chat failed"
    assert messages["t-down"].startswith("cannot reach the backend of down: ConnectError")
    assert messages["w-webhook"] == (
        "wake of webhook failed: the wake request answered 500 (its body is in the "
        "publisher's debug log)"
    )
    assert messages["w-hook"].startswith("wake of unreachable-hook failed: the wake request ")
    assert messages["w-script"] == (
        "wake of script failed: the wake command exited with status 2 "
        "(its stderr is in the publisher's debug log)"
    )
    # The operator still finds the command's own words and the webhook's answer, in the
    # publisher's DEBUG log only.
    debug = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
    assert any("login failed for token=SECRET2" in m for m in debug), debug
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert not [m for m in shown if "SECRET" in m or "hunter2" in m or "power switch" in m]


def test_a_relay_url_that_is_not_the_relays_says_so(tmp_path: Path) -> None:
    """A 404 on the first call: the URL points somewhere that is not the relay's root."""
    from starlette.applications import Starlette  # noqa: PLC0415

    with serve(Starlette()) as url:
        pub = publisher(f"{url}/natrelay", tmp_path, {"name": "echo", "type": "echo"})
        with pytest.raises(RelayCallError) as caught:
            asyncio.run(pub.run(asyncio.Event()))
    assert caught.value.status == 404
    assert "is relay.url the relay's own URL" in caught.value.message


@pytest.mark.parametrize(
    ("url", "warned"), [("http://relay.invalid:9", True), ("http://[::1]:9", False)]
)
def test_plain_http_to_another_host_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, url: str, warned: bool
) -> None:
    pub = publisher(url, tmp_path, {"name": "echo", "type": "echo"})

    async def scenario() -> None:
        await asyncio.sleep(0.2)

    with caplog.at_level("WARNING", logger="natrelay.publisher"):
        run(pub, scenario)
    lines = [r.getMessage() for r in caplog.records if "plain http" in r.getMessage()]
    assert lines == (
        [
            f"relay.url {url} is plain http: the publish token and every "
            "prompt and answer cross the network unencrypted; use https://"
        ]
        if warned
        else []
    )
    others = ["http://localhost:8787", "http://127.0.0.2", "https://relay.example.com"]
    assert not any(_plain_http_elsewhere(u) for u in others)
    assert _plain_http_elsewhere("http://192.168.1.20:8787")


def test_held_names_are_retried_only_between_requests(
    relay: tuple[str, FakeRelay], tmp_path: Path
) -> None:
    """Registering again starts a new generation of the session, under which the relay
    would take the task in flight for lost: the retry of a held name waits for a gap."""
    url, fake = relay
    fake.held = {"taken"}
    slow = {"name": "free", "type": "echo", "options": {"tokenDelayMs": 100}}
    fake.add(infer_task("t1", "free", words(20), stream=True))

    async def scenario() -> None:
        await until(lambda: "t1" in fake.results())
        await until(lambda: len(fake.calls("register")) >= 6)
        fake.held = set()
        await until(lambda: "taken" in fake.rows)

    run(publisher(url, tmp_path, slow, {"name": "taken", "type": "echo"}), scenario)
    registers = [t for t, k, _ in fake.events if k == "register"]
    chunks = [t for t, k, _ in fake.events if k == "chunks"]
    result = next(t for t, k, b in fake.events if k == "result" and b["task"] == "t1")
    assert result - chunks[0] >= 1.5  # the task spanned several heartbeat intervals
    assert not [t for t in registers if chunks[0] < t < result]
    # Refused with both names, then registered without the held one, then with it.
    bodies = fake.calls("register")
    assert [p["name"] for p in bodies[0]["providers"]] == ["free", "taken"]
    assert [p["name"] for p in bodies[1]["providers"]] == ["free"]
    assert [p["name"] for p in bodies[-1]["providers"]] == ["free", "taken"]
