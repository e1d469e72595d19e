from __future__ import annotations

import asyncio
import logging
import re
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from natrelay.wire import LlmStatus
from natrelay_infra.wake_controller import WakeController
from natrelay_publisher.config import ProviderConfig
from natrelay_publisher.errors import RecipeError
from natrelay_publisher.recipes import RECIPES, WakeRecipe
from natrelay_publisher.recipes.wol import magic_packet
from natrelay_publisher.slots import ProviderSlot
from natrelay_publisher.wake import Waker
from tests.publisher.fakes import FakeVllm
from tests.support.net import serve


def provider_config(**fields: Any) -> ProviderConfig:
    return ProviderConfig.model_validate({"name": "sleepy", "type": "echo", **fields})


def recipe(wake: dict[str, Any], **fields: Any) -> WakeRecipe:
    config = provider_config(wake=wake, **fields)
    assert config.wake is not None
    return RECIPES.find(config.wake.type)(config.wake, config)


# --- http --------------------------------------------------------------------------------


def test_http_recipe_calls_the_url(controller: tuple[str, WakeController]) -> None:
    url, state = controller
    wake = recipe(
        {
            "type": "http",
            "url": f"{url}/wake",
            "method": "PUT",
            "headers": {"X-Secret": "s3"},
            "body": {"host": "gpu-box"},
        }
    )
    asyncio.run(wake.run("wake"))
    assert state.awake
    call = state.wake_calls[-1]
    assert call["method"] == "PUT"
    assert call["headers"]["x-secret"] == "s3"
    assert call["body"] == '{"host":"gpu-box"}'


def test_http_recipe_non_2xx_fails_without_the_answer(
    controller: tuple[str, WakeController], caplog: pytest.LogCaptureFixture
) -> None:
    """A webhook's answer may hold anything (an internal URL, a password): it never goes
    to the relay, and is logged at DEBUG on the publisher only."""
    url, _ = controller
    wake = recipe({"type": "http", "url": f"{url}/fail"})
    caplog.set_level(logging.DEBUG, logger="natrelay.publisher")
    with pytest.raises(RecipeError) as failed:
        asyncio.run(wake.run("wake"))
    assert str(failed.value) == (
        "the wake request answered 500 (its body is in the publisher's debug log)"
    )
    assert "power switch" not in str(failed.value)
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert not [line for line in shown if "power switch" in line], shown
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("the power switch is stuck" in line for line in debug), debug
    unreachable = recipe({"type": "http", "url": "http://127.0.0.1:9/wake"})
    with pytest.raises(RecipeError, match=r"^the wake request \(POST\) failed: ConnectError"):
        asyncio.run(unreachable.run("wake"))


# --- command -----------------------------------------------------------------------------


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "recipe.py"
    path.write_text(body)
    return str(path)


def test_command_recipe_runs_without_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "woken"
    path = script(
        tmp_path, "import sys, pathlib\npathlib.Path(sys.argv[1]).write_text(sys.argv[2])\n"
    )
    # `$HOME;` would be expanded (and `;` split) by a shell; here it is one argument, verbatim.
    wake = recipe(
        {"type": "command", "command": sys.executable, "args": [path, str(marker), "$HOME;x"]}
    )
    asyncio.run(wake.run("wake"))
    assert marker.read_text() == "$HOME;x"


def test_command_recipe_non_zero_exit_logs_stderr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = script(
        tmp_path,
        "import sys\nprint('noise ' * 200, file=sys.stderr)\n"
        "print('disk on fire', file=sys.stderr)\nsys.exit(3)\n",
    )
    wake = recipe({"type": "command", "command": sys.executable, "args": [path]})
    # The cause for the client; the command's own words (maybe a secret) at DEBUG only.
    caplog.set_level(logging.DEBUG, logger="natrelay.publisher")
    with pytest.raises(RecipeError, match=r"^the wake command exited with status 3 \(its stderr"):
        asyncio.run(wake.run("wake"))
    [logged] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert logged.endswith("exited with status 3") and "disk on fire" not in logged
    [output] = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
    assert re.search(r"exited with status 3: ….*noise disk on fire$", output)


def test_command_recipe_missing_program_and_timeout(tmp_path: Path) -> None:
    program = tmp_path / "wake-gpu"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    gone = recipe({"type": "command", "command": str(program)})
    program.unlink()  # found at start, removed since: the wake says so
    with pytest.raises(RecipeError, match=r"^cannot run the wake command: No such file"):
        asyncio.run(gone.run("wake"))
    path = script(tmp_path, "import time\ntime.sleep(30)\n")
    slow = recipe(
        {"type": "command", "command": sys.executable, "args": [path], "maxWaitSeconds": 0.5}
    )
    with pytest.raises(RecipeError, match=r"^the wake command did not finish within 0.5 s"):
        asyncio.run(slow.run("wake"))


# --- wol ---------------------------------------------------------------------------------


def test_wol_sends_the_magic_packet() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(5)
        port = listener.getsockname()[1]
        wake = recipe(
            {"type": "wol", "mac": "AA-bb-CC-01-02-03", "broadcast": "127.0.0.1", "port": port}
        )
        asyncio.run(wake.run("wake"))
        packet, _ = listener.recvfrom(1024)
    assert packet == b"\xff" * 6 + bytes([0xAA, 0xBB, 0xCC, 1, 2, 3]) * 16
    assert len(packet) == 102
    assert magic_packet("aabbcc010203") == packet


def test_wol_defaults() -> None:
    config = provider_config(wake={"type": "wol", "mac": "aa:bb:cc:dd:ee:ff"}).wake
    assert config is not None
    assert (getattr(config, "broadcast"), getattr(config, "port")) == ("255.255.255.255", 9)


# --- vllm-sleep --------------------------------------------------------------------------


def test_vllm_sleep_mode() -> None:
    vllm = FakeVllm(sleeping=False)
    with serve(vllm.app()) as url:
        fields = {"type": "openai", "baseUrl": f"{url}/v1", "model": "m"}
        config = provider_config(
            wake={"type": "vllm-sleep"}, sleep={"type": "vllm-sleep", "level": 2}, **fields
        )
        slot = ProviderSlot.build(config)
        assert slot.wake_recipe is not None and slot.sleep_recipe is not None

        async def cycle() -> list[bool]:
            seen = [await slot.ready()]
            await slot.sleep_recipe.run("sleep")  # type: ignore[union-attr]
            # The OpenAI API still answers: readiness must come from /is_sleeping.
            seen += [await slot.ready(), await slot.provider.available()]
            await slot.wake_recipe.run("wake")  # type: ignore[union-attr]
            seen.append(await slot.ready())
            await slot.provider.aclose()
            return seen

        assert asyncio.run(cycle()) == [True, False, True, True]
        assert vllm.calls == ["sleep level=2", "wake_up"]


# --- the waker: wake, join, fail, time out, sleep ----------------------------------------


def sleepy_slot(url: str, wake_path: str = "/wake", max_wait: float = 10) -> ProviderSlot:
    config = provider_config(
        options={"availabilityUrl": f"{url}/ready"},
        wake={"type": "http", "url": f"{url}{wake_path}", "maxWaitSeconds": max_wait},
        sleep={"type": "http", "url": f"{url}/sleep"},
        sleepAfterIdleSeconds=60,
    )
    slot = ProviderSlot.build(config)
    slot.status = LlmStatus.HIBERNATING
    return slot


class Beats:
    """Counts the waker's heartbeats; `on_beat` hears each one's number."""

    def __init__(self, on_beat: Callable[[int], None] | None = None) -> None:
        self.count = 0
        self.on_beat = on_beat

    async def __call__(self) -> None:
        self.count += 1
        if self.on_beat is not None:
            self.on_beat(self.count)


def test_concurrent_wakes_share_one_recipe_run(controller: tuple[str, WakeController]) -> None:
    url, state = controller
    state.wake_delay = 3600  # up only when the third heartbeat says so

    def up_after_three(count: int) -> None:
        if count == 3:
            state.awake = True

    beats = Beats(up_after_three)

    async def scenario() -> list[Any]:
        slot = sleepy_slot(url)
        waker = Waker(beats, tick_seconds=0.1)
        outcomes = await asyncio.gather(
            waker.wake(slot, "w1"),
            waker.before_infer(slot, "w1"),
            waker.wake(slot, "w2"),
            waker.before_infer(slot, None),
        )
        # Later: an infer whose wake finished earlier gets the remembered outcome.
        late = await waker.before_infer(slot, "w1")
        return [*outcomes, late, slot.status]

    *outcomes, status = asyncio.run(scenario())
    assert len(state.wake_calls) == 1
    assert all(o is not None and o.ok for o in outcomes)
    assert outcomes[0].ms >= 300  # three readiness ticks of 0.1 s
    assert status == LlmStatus.ACTIVE
    assert beats.count == 3  # a heartbeat on each readiness tick while waiting, none after


def test_failed_wake_names_the_cause(controller: tuple[str, WakeController]) -> None:
    url, _ = controller

    async def scenario() -> tuple[Any, Any, LlmStatus]:
        slot = sleepy_slot(url, "/fail")
        waker = Waker(Beats(), tick_seconds=0.1)
        first, second = await asyncio.gather(waker.wake(slot, "w1"), waker.before_infer(slot, "w1"))
        return first, second, slot.status

    first, second, status = asyncio.run(scenario())
    assert not first.ok and second == first
    assert first.message == (
        "wake of sleepy failed: the wake request answered 500 "
        "(its body is in the publisher's debug log)"
    )
    assert status == LlmStatus.HIBERNATING


def test_wake_times_out_when_the_backend_never_answers(
    controller: tuple[str, WakeController],
) -> None:
    url, state = controller
    state.wake_delay = 60

    async def scenario() -> Any:
        # 2 s: room for the wake request itself on a loaded machine, far below the delay
        return await Waker(Beats(), tick_seconds=0.1).wake(sleepy_slot(url, max_wait=2), "w")

    outcome = asyncio.run(scenario())
    assert not outcome.ok
    assert outcome.message == "wake of sleepy failed: sleepy did not answer within 2 s"
    assert 2000 <= outcome.ms < 30_000  # gave up at its own limit, not the backend's 60 s


def test_infer_with_a_wake_id_that_never_arrives_goes_on(
    controller: tuple[str, WakeController], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = controller
    monkeypatch.setattr("natrelay_publisher.wake.WAKE_ARRIVAL_MARGIN_SECONDS", 0.2)

    async def scenario() -> tuple[Any, int]:
        slot = sleepy_slot(url, max_wait=0.3)
        slot.status = LlmStatus.ACTIVE
        waker = Waker(Beats(), tick_seconds=0.1)
        outcome = await waker.before_infer(slot, "never")
        return outcome, waker.awaiting_arrival

    assert asyncio.run(scenario()) == (None, 0)


def test_sleep_then_local_wake(controller: tuple[str, WakeController]) -> None:
    url, state = controller
    state.awake = True
    beats = Beats()

    async def scenario() -> list[Any]:
        slot = sleepy_slot(url)
        slot.status = LlmStatus.ACTIVE
        waker = Waker(beats, tick_seconds=0.1)
        await waker.sleep(slot)
        seen: list[Any] = [slot.status, state.awake]
        # An infer for a provider we put to sleep wakes it first.
        outcome = await waker.before_infer(slot, None)
        return [*seen, outcome is not None and outcome.ok, slot.status]

    assert asyncio.run(scenario()) == [LlmStatus.HIBERNATING, False, True, LlmStatus.ACTIVE]
    assert len(state.wake_calls) == 1


def test_infer_with_a_wake_id_runs_at_once_when_the_backend_is_up(
    controller: tuple[str, WakeController],
) -> None:
    url, state = controller
    state.awake = True

    async def scenario() -> tuple[Any, float]:
        started = time.monotonic()
        outcome = await Waker(Beats()).before_infer(sleepy_slot(url, max_wait=30), "w-unseen")
        return outcome, time.monotonic() - started

    outcome, took = asyncio.run(scenario())
    assert outcome is None and took < 5
    assert state.wake_calls == []
