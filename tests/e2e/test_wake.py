"""End to end with the openai client: a sleeping backend wakes once for a burst of callers."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai

from natrelay.wire import ErrorCode
from natrelay_infra.wake_controller import WakeController
from tests.publisher.running import publishing, wait_rows
from tests.support.stack import Stack, dynamodb_client, wake_tasks_written


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


def infer_task_ids(stack: Stack) -> list[str]:
    """The ids of the infer tasks the relay wrote, as the table holds them."""
    items = dynamodb_client(stack.moto_endpoint).scan(
        TableName=stack.tables.tasks,
        FilterExpression="kind = :i AND sk = :m",
        ExpressionAttributeValues={":i": {"S": "infer"}, ":m": {"S": "m"}},
    )["Items"]
    return [item["pk"]["S"].removeprefix("task#") for item in items]


def test_a_failed_wake_reads_the_same_in_the_answer_and_the_task(
    stack: Stack, tmp_path: Path
) -> None:
    """The publisher types its failures from the relay's table (ErrorCode), so a client
    reads the same `type` in the chat completion's error and in the task view."""
    with WakeController() as controller:
        provider = {
            "name": "sleepy",
            "type": "echo",
            "options": {"availabilityUrl": f"{controller.url}/ready"},
            "wake": {"type": "http", "url": f"{controller.url}/fail", "maxWaitSeconds": 20},
        }
        with publishing(stack, tmp_path, [provider], {"sleepy": "hibernating"}):
            headers = {"Authorization": f"Bearer {stack.client_token}"}
            answer = httpx.post(
                f"{stack.url}/v1/chat/completions",
                headers=headers,
                json={"model": "sleepy", "messages": [{"role": "user", "content": "hi"}]},
                timeout=60,
            )
            assert answer.status_code == ErrorCode.WAKE_FAILED.status, answer.text
            in_answer = answer.json()["error"]
            [task_id] = infer_task_ids(stack)
            view = httpx.get(f"{stack.url}/api/v1/tasks/{task_id}", headers=headers, timeout=10)
            in_view = view.json()["error"]
    assert in_answer["code"] == in_view["code"] == ErrorCode.WAKE_FAILED
    assert in_answer["type"] == in_view["type"] == "service_unavailable"
