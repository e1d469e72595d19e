"""A request's timeline and trace, end to end (a real relay, publisher and backend): a
streamed request to a sleeping backend waits for its wake, is dispatched and streams;
the console's timeline of it shows each leg in order, adding up to the client's time
within 5 %, and its trace context reaches the relay's, the publisher's and the
backend's side."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from natrelay.service.access import STATIC_IDS
from natrelay.service.timeline import LEGS
from natrelay.wire import Paths, Role
from natrelay_infra.moto_server import MotoProcess
from tests.publisher.running import publisher_config, start_publisher, wait_rows
from tests.support.backend import FakeBackend
from tests.support.net import serve, wait_until
from tests.support.stack import Stack, running_stack

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
# Long enough that the client's own fixed costs outside the relay (its connection, the
# SDK; ~100-150 ms on a loaded machine) stay well inside the 5 % asked for.
WAKE_SECONDS = 4.0
TOKENS, TOKEN_SECONDS = 60, 0.05


@pytest.fixture
def stack(moto_server: MotoProcess, tmp_path: Path) -> Iterator[Stack]:
    # plain http on 127.0.0.1: the console's cookie without Secure, as `natrelay dev` sets it
    with running_stack(
        moto_server.endpoint,
        tmp_path / "relay.log",
        heartbeat_timeout_seconds=5,
        cookie_secure=False,
    ) as running:
        yield running


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _console(stack: Stack) -> httpx.Client:
    browser = httpx.Client(base_url=stack.url, timeout=30, follow_redirects=False)
    logged = browser.post(Paths.CONSOLE_LOGIN, data={"key": stack.admin_token})
    assert logged.status_code == 303, logged.text
    return browser  # open: the caller closes it


def _ms(text: str) -> float:
    return float(text.replace(",", "").removesuffix(" ms").lstrip("+"))


def _timeline(page: str) -> tuple[list[tuple[str, float]], dict[str, float], float]:
    """The page's steps (what, ms after received), its legs (ms) and their total."""
    steps = [
        (what, _ms(at))
        for what, at in re.findall(
            r'<li id="step-[^"]+"><span><b>([^<]+)</b></span>.*?<span class="n">([^<]+)</span>',
            page,
        )
    ]
    legs = {
        leg: _ms(ms)
        for leg, ms in re.findall(r'<tr id="leg-(\w+)">.*?<td class="n">([^<]+)</td>', page)
    }
    total = re.search(r'id="legs-total">([^<]+)<', page)
    assert total, page
    return steps, legs, _ms(total[1])


def test_a_woken_queued_streamed_request_on_the_console(stack: Stack, tmp_path: Path) -> None:
    backend = FakeBackend(
        asleep=True, wake_delay=WAKE_SECONDS, tokens=TOKENS, interval=TOKEN_SECONDS
    )
    with serve(backend.app()) as url:
        provider = {
            "name": "sleepy",
            "type": "openai",
            "baseUrl": f"{url}/v1",
            "model": "m1",
            "wake": {"type": "http", "url": f"{url}/_fake/wake", "maxWaitSeconds": 20},
        }
        config = publisher_config(stack, tmp_path, [provider])
        publisher = start_publisher(config, tmp_path, "publisher", "--log-format", "json")
        try:
            wait_rows(stack, {"sleepy": "hibernating"})
            oai = openai.OpenAI(
                base_url=f"{stack.url}/v1",
                api_key=stack.client_token,
                max_retries=0,
                timeout=60,
                default_headers={"traceparent": CLIENT_TRACEPARENT},
            )
            assert "sleepy" in {m.id for m in oai.models.list()}  # its connection open
            started = time.monotonic()
            stream = oai.chat.completions.create(
                model="sleepy", stream=True, messages=[{"role": "user", "content": "hi"}]
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            client_ms = (time.monotonic() - started) * 1000
            assert text == backend.text()
            assert client_ms >= WAKE_SECONDS * 1000  # it did wait for the wake
        finally:
            publisher.stop()  # its line for the task is written by then

    console = _console(stack)
    try:
        # the shared client token's requests (the model's list has its wake task too)
        mine = STATIC_IDS[Role.CLIENT]
        listed = console.get(Paths.CONSOLE_REQUESTS, params={"key": mine})
        assert listed.status_code == 200, listed.text
        [task_id] = re.findall(r'href="/console/requests/([^"]+)"', listed.text)
        page = console.get(Paths.CONSOLE_REQUEST.format(task_id=task_id)).text
    finally:
        console.close()
    steps, legs, total = _timeline(page)

    # each moment in the order it happened, from received to done
    names = [what for what, _ in steps]
    assert names[0] == "received" and names[-1] == "done", names
    assert {"queued", "woke", "dispatched", "first token"} <= set(names), names
    times = [at for _, at in steps]
    assert times == sorted(times), steps
    assert names.index("woke") < names.index("first token") < names.index("done")
    # each leg in order, none negative, the wake a real part of it
    assert list(legs) == [leg for leg in LEGS if leg in legs]
    assert set(legs) == set(LEGS), legs
    assert all(ms >= 0 for ms in legs.values()), legs
    assert legs["wake"] >= WAKE_SECONDS * 1000 * 0.9, legs
    assert legs["backend"] >= (TOKENS - 1) * TOKEN_SECONDS * 1000 * 0.9, legs
    # they add up to the whole, and the whole is the client's time within 5 %
    assert sum(legs.values()) == pytest.approx(total, abs=0.5)
    assert steps[-1][1] == pytest.approx(total, abs=0.5)
    assert total == pytest.approx(client_ms, rel=0.05), (total, client_ms)

    # one trace: the client's trace id in the relay's line for the request, in the task
    # (the timeline shows it), in the publisher's line for the task, and at the backend,
    # whose parent is the publisher's span
    requests = [
        line
        for line in _json_lines(tmp_path / "relay.log")
        if line.get("message") == "request" and line.get("path") == Paths.CHAT
    ]
    [relay_line] = requests
    relay_span = relay_line["traceparent"]
    assert relay_span.split("-")[1] == TRACE_ID
    assert relay_span in page  # the task carries the relay's span
    [publisher_line] = [
        line
        for line in _json_lines(publisher.log_path)
        if line.get("message", "").startswith(f"task {task_id}")
    ]
    publisher_span = publisher_line["traceparent"]
    assert publisher_span.split("-")[1] == TRACE_ID and publisher_span != relay_span
    [at_backend] = backend.traceparents
    assert at_backend is not None and at_backend.split("-")[1] == TRACE_ID
    assert at_backend.split("-")[2] == publisher_span.split("-")[2]  # the publisher's span


def test_a_request_without_a_trace_gets_one(stack: Stack, tmp_path: Path) -> None:
    """No traceparent from the client (or a malformed one): the relay starts a trace,
    and the backend still gets one of it."""
    backend = FakeBackend()
    with serve(backend.app()) as url:
        provider = {"name": "awake", "type": "openai", "baseUrl": f"{url}/v1", "model": "m1"}
        config = publisher_config(stack, tmp_path, [provider])
        publisher = start_publisher(config, tmp_path)
        try:
            wait_rows(stack, {"awake": "active"})
            for header in ({}, {"traceparent": "00-zz-nope-01"}):
                answer = httpx.post(
                    f"{stack.url}{Paths.CHAT}",
                    headers={"Authorization": f"Bearer {stack.client_token}", **header},
                    json={"model": "awake", "messages": [{"role": "user", "content": "x"}]},
                    timeout=30,
                )
                assert answer.status_code == 200, answer.text
        finally:
            publisher.stop()
    lines = wait_until(
        lambda: [
            line
            for line in _json_lines(tmp_path / "relay.log")
            if line.get("message") == "request" and line.get("path") == Paths.CHAT
        ],
        10,
    )
    traces = [line["traceparent"].split("-")[1] for line in lines]
    assert len(set(traces)) == 2 and "zz" not in " ".join(traces)
    assert [t.split("-")[1] if t else None for t in backend.traceparents] == traces
