"""End to end: a synchronous client that gives up frees the single-slot backend — the
relay cancels its task, the real publisher hears of it in its next work beat (or
heartbeat) and aborts the backend request — so the next caller is served instead of
queuing behind it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from natrelay_infra.moto_server import MotoProcess
from tests.publisher.one_slot import OneSlot, solo
from tests.publisher.running import publisher_config, start_publisher, wait_rows
from tests.support.net import post_unread, serve
from tests.support.stack import Stack, running_stack

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


# The publisher's heartbeat in the next test: the abort must come well before it.
SLOW_HEARTBEAT = 60.0


@pytest.mark.parametrize("mode", ["server", "lambda"])
def test_a_busy_publisher_hears_of_a_hang_up_within_a_work_beat(
    moto_server: MotoProcess, tmp_path: Path, mode: str
) -> None:
    backend = OneSlot()
    with (
        serve(backend.app()) as url,
        running_stack(moto_server.endpoint, mode=mode, heartbeat_timeout_seconds=90) as stack,
    ):
        config = publisher_config(stack, tmp_path, [solo(url)], heartbeatSeconds=SLOW_HEARTBEAT)
        publisher = start_publisher(config, tmp_path)
        try:
            wait_rows(stack, {"solo": "active"})
            body = {"model": "solo", "messages": HELLO}
            connection = post_unread(stack.url, "/v1/chat/completions", body, stack.client_token)
            assert backend.generating.wait(30), publisher.log()
            connection.close()  # the client hangs up; its request holds the only slot
            # a work beat every 2.5 s carries it; the heartbeat would take up to 60 s
            assert backend.aborted.wait(SLOW_HEARTBEAT / 3), publisher.log()
            publisher.wait_log("its client went away; backend request aborted")
        finally:
            backend.release.set()
            publisher.stop()
