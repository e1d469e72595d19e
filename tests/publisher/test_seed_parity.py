"""What the seed did that the publisher must still do: a plugin's availability check that
raises means "not available" (the publisher runs on); a backend that is up is published
active even with a wake recipe; a wake task for a provider without a recipe fails with
a clear error."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from natrelay.wire import ErrorCode
from natrelay_infra.wake_controller import WakeController
from natrelay_publisher.providers.echo import EchoProvider
from tests.publisher.fake_relay import FakeRelay, wake_task
from tests.publisher.test_publisher import publisher, run, until
from tests.support.backend import FakeBackend
from tests.support.net import serve


def test_an_availability_check_that_raises_means_not_available(
    relay: tuple[str, FakeRelay], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, fake = relay

    async def broken(self: EchoProvider) -> bool:
        raise RuntimeError("plugin bug")

    monkeypatch.setattr(EchoProvider, "available", broken)

    async def scenario() -> None:
        await until(lambda: len(fake.calls("heartbeat")) >= 2)  # it runs on

    pub = publisher(url, tmp_path, {"name": "flaky", "type": "echo"})
    run(pub, scenario)
    [registered] = fake.calls("register")
    assert registered["providers"][0]["initialStatus"] == "unavailable"
    assert pub.slots["flaky"].why_down() == (
        "its availability check raised RuntimeError: plugin bug"
    )


def test_a_backend_that_is_up_is_published_active_despite_its_wake_recipe(
    relay: tuple[str, FakeRelay], controller: tuple[str, WakeController], tmp_path: Path
) -> None:
    url, fake = relay
    wake_url, state = controller
    with serve(FakeBackend().app()) as backend:
        awake = {
            "name": "awake",
            "type": "openai",
            "model": "m",
            "baseUrl": f"{backend}/v1",
            "wake": {"type": "http", "url": f"{wake_url}/wake", "maxWaitSeconds": 20},
        }

        async def scenario() -> None:
            await until(lambda: bool(fake.calls("register")))

        run(publisher(url, tmp_path, awake), scenario)
    [registered] = fake.calls("register")
    assert registered["providers"][0]["initialStatus"] == "active"
    assert registered["providers"][0]["wakeMaxWaitSeconds"] == 20
    assert state.wake_calls == []  # nothing to wake


def test_a_wake_task_for_a_provider_without_a_recipe_fails_clearly(
    relay: tuple[str, FakeRelay], tmp_path: Path
) -> None:
    url, fake = relay
    fake.add(wake_task("w1", "plain"))

    async def scenario() -> None:
        await until(lambda: "w1" in fake.results())
        await asyncio.sleep(0)

    run(publisher(url, tmp_path, {"name": "plain", "type": "echo"}), scenario)
    result = fake.results()["w1"]
    assert result["status"] == 503
    assert result["error"]["code"] == ErrorCode.WAKE_FAILED
    assert result["error"]["message"] == "wake of plain failed: it has no wake recipe"
