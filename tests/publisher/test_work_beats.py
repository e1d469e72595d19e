"""Work beats (docs/relay.md, "Failover"): while it runs tasks the publisher proves it
lives every `workBeatSeconds` the relay names, and never while idle; a task the relay
gave to another member (409 task_moved) is dropped, its slot freed, never retried."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from tests.publisher.fake_relay import FakeRelay, infer_task
from tests.publisher.test_publisher import publisher, run, until, words

SLOW = {"name": "slow", "type": "echo", "maxConcurrency": 1, "options": {"tokenDelayMs": 50}}


def work_beats(fake: FakeRelay) -> list[tuple[float, list[str]]]:
    """When each work beat came, and the tasks it said run."""
    return [
        (t, list(body.get("running") or []))
        for t, kind, body in fake.events
        if kind == "heartbeat" and body.get("work")
    ]


def test_work_beats_while_a_task_runs_and_none_while_idle(
    relay: tuple[str, FakeRelay], tmp_path: Path
) -> None:
    url, fake = relay
    fake.work_beat_seconds = 0.2

    async def scenario() -> None:
        await until(lambda: bool(fake.calls("poll")))
        await _idle(1.0)  # registered, polling, nothing to run
        fake.add(infer_task("t1", "slow", words(30), stream=True))
        await until(lambda: "t1" in fake.results())
        await _idle(1.0)

    run(publisher(url, tmp_path, SLOW), scenario)
    assert all(body.get("workBeats") for body in fake.calls("register"))
    [first_chunk] = [t for t, k, b in fake.events if k == "chunks" and b["seq"] == 0][:1]
    [result] = [t for t, k, _ in fake.events if k == "result"]
    beats = work_beats(fake)
    during = [running for t, running in beats if first_chunk < t < result]
    assert len(during) >= 3, beats  # ~1.5 s of work, a beat every 0.2 s
    assert all(running == ["t1"] for running in during)
    # none before the task came, none once it is done (a beat in flight at the end aside)
    assert not [t for t, _ in beats if t < first_chunk - 0.5 or t > result + 0.5], beats


def test_a_task_that_moved_is_dropped_and_its_slot_freed(
    relay: tuple[str, FakeRelay], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, fake = relay
    fake.moved = {"t1"}
    fake.add(infer_task("t1", "slow", "first"), infer_task("t2", "slow", "second"))

    async def scenario() -> None:
        await until(lambda: "t2" in fake.results())

    with caplog.at_level(logging.WARNING, logger="natrelay.publisher"):
        run(publisher(url, tmp_path, SLOW), scenario)
    assert [b["task"] for b in fake.calls("result")].count("t1") == 1  # never retried
    assert "task t1: the relay gave it to another member" in caplog.text
    assert "Traceback" not in caplog.text


def test_an_older_relay_gets_a_registration_without_work_beats(
    relay: tuple[str, FakeRelay], tmp_path: Path
) -> None:
    url, fake = relay
    fake.knows_work_beats = False
    fake.add(infer_task("t1", "slow", "hello"))

    async def scenario() -> None:
        await until(lambda: "t1" in fake.results())

    run(publisher(url, tmp_path, SLOW), scenario)
    asked = [bool(body.get("workBeats")) for body in fake.calls("register")]
    assert asked[0] and not asked[-1]
    assert not work_beats(fake)


async def _idle(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    await until(lambda: time.monotonic() >= deadline, seconds + 5)
