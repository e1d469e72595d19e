"""End to end with the openai client: a sleeping backend wakes once for a burst of callers."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

from natrelay_infra.wake_controller import WakeController
from tests.publisher.running import publishing, wait_rows
from tests.support.stack import Stack, wake_tasks_written


def wake_tasks(stack: Stack) -> int:
    return wake_tasks_written(stack.moto_endpoint, stack.tables.tasks)


def test_twenty_parallel_first_calls_share_one_wake(stack: Stack, tmp_path: Path) -> None:
    with WakeController(wake_delay=1.0) as controller:
        provider = {
            "name": "echo-sleepy",
            "type": "echo",
            "model": "echo",
            "maxConcurrency": 20,
            "options": {"availabilityUrl": f"{controller.url}/ready"},
            "wake": {
                "type": "http",
                "url": f"{controller.url}/wake",
                "method": "POST",
                "maxWaitSeconds": 20,
            },
        }
        with publishing(stack, tmp_path, [provider], {"echo-sleepy": "hibernating"}):
            oai = openai.OpenAI(
                base_url=f"{stack.url}/v1", api_key=stack.client_token, max_retries=0, timeout=60
            )
            # a hibernating model is still listed: it can serve, after a wake
            assert "echo-sleepy" in {m.id for m in oai.models.list()}
            started = time.monotonic()

            def call(i: int) -> tuple[str | None, float]:
                reply = oai.chat.completions.create(
                    model="echo-sleepy", messages=[{"role": "user", "content": f"call {i}"}]
                )
                return reply.choices[0].message.content, time.monotonic() - started

            with ThreadPoolExecutor(20) as pool:
                results = list(pool.map(call, range(20)))
            assert [text for text, _ in results] == [f"call {i}" for i in range(20)]
            # every answer came after the backend woke (about a second after the wake)
            assert min(elapsed for _, elapsed in results) >= 1.0
            assert controller.awake
            assert wake_tasks(stack) == 1
            wait_rows(stack, {"echo-sleepy": "active"})
            # awake now: the next call needs no wake
            oai.chat.completions.create(
                model="echo-sleepy", messages=[{"role": "user", "content": "again"}]
            )
            assert wake_tasks(stack) == 1
