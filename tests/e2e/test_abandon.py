"""End to end: a synchronous client that gives up frees the single-slot backend — the
relay cancels its task, the real publisher hears of it in its next heartbeat and aborts
the backend request — so the next caller is served instead of queuing behind it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.publisher.one_slot import OneSlot, solo
from tests.publisher.running import publisher_config, start_publisher, wait_rows
from tests.support.net import serve
from tests.support.stack import Stack

pytestmark = pytest.mark.slow

HELLO = [{"role": "user", "content": "hello"}]


def test_a_client_that_gives_up_frees_the_backend_for_the_next(
    stack: Stack, tmp_path: Path
) -> None:
    backend = OneSlot()
    with serve(backend.app()) as url:
        config = publisher_config(stack, tmp_path, [solo(url)])
        publisher = start_publisher(config, tmp_path)
        try:
            wait_rows(stack, {"solo": "active"})
            headers = {"Authorization": f"Bearer {stack.client_token}"}
            body = {"model": "solo", "messages": HELLO}
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(
                    f"{stack.url}/v1/chat/completions",
                    headers=headers,
                    json=body,
                    timeout=httpx.Timeout(30, read=2.0),
                )
            assert backend.aborted.wait(30), publisher.log()
            publisher.wait_log("its client went away; backend request aborted")
            backend.release.set()  # the next generation runs through
            second = httpx.post(
                f"{stack.url}/v1/chat/completions", headers=headers, json=body, timeout=60
            )
            assert second.status_code == 200, second.text
            assert second.json()["choices"][0]["message"]["content"] == "hello"
            assert backend.calls == 2 and backend.answered == 1
        finally:
            publisher.stop()
