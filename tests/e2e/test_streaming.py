"""End to end: openai client -> relay (uvicorn, moto) -> real publisher -> timed backend."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from natrelay.wire import Paths
from tests.publisher.running import PublisherProcess, publishing
from tests.support.backend import FakeBackend
from tests.support.net import serve
from tests.support.stack import Stack

MSG = [{"role": "user", "content": "go"}]


@pytest.fixture
def timed() -> FakeBackend:
    """40 tokens 50 ms apart."""
    return FakeBackend(tokens=40, interval=0.05, prompt_tokens=3)


@pytest.fixture
def published(stack: Stack, timed: FakeBackend, tmp_path: Path) -> Iterator[PublisherProcess]:
    with serve(timed.app()) as backend_url:
        provider = {
            "name": "timed",
            "type": "openai",
            "baseUrl": f"{backend_url}/v1",
            "model": "timed-backend",
            "maxConcurrency": 4,
        }
        with publishing(stack, tmp_path, [provider], {"timed": "active"}) as publisher:
            yield publisher


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.client_token, max_retries=0)


def test_tokens_reach_the_client_as_the_backend_produces_them(
    stack: Stack, timed: FakeBackend, published: PublisherProcess
) -> None:
    # The backend stops halfway until the client has every token it produced so far.
    timed.hold_after = timed.tokens // 2
    timed.hold()
    arrivals: list[str] = []
    stream = client(stack).chat.completions.create(model="timed", messages=MSG, stream=True)  # type: ignore[arg-type]
    try:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(chunk.choices[0].delta.content)
            if len(arrivals) == timed.hold_after:
                assert not timed.finished.is_set()  # tokens came as they were produced
                timed.release()
    finally:
        timed.release()
    assert "".join(arrivals) == timed.text()
    assert len(timed.produced_at) == timed.tokens


def test_final_usage_chunk_and_pass_through_fields(
    stack: Stack, timed: FakeBackend, published: PublisherProcess
) -> None:
    oai = client(stack)
    stream = oai.chat.completions.create(
        model="timed",
        messages=MSG,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == timed.tokens
    extra: dict[str, Any] = {
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "response_format": {"type": "json_object"},
        "n": 2,
        "stop": ["\n"],
        "seed": 7,
    }
    reply = oai.chat.completions.create(
        model="timed",
        messages=MSG,
        extra_body={"x_custom": {"keep": True}},
        **extra,  # type: ignore[arg-type]
    )
    assert reply.usage is not None and reply.usage.total_tokens == 3 + timed.tokens
    sent = timed.requests[-1]
    assert sent["model"] == "timed-backend"  # the publisher's backend model replaces the name
    assert {k: sent[k] for k in extra} == extra and sent["x_custom"] == {"keep": True}


def test_a_client_that_hangs_up_aborts_the_backend_request(
    stack: Stack, timed: FakeBackend, published: PublisherProcess
) -> None:
    timed.tokens, timed.hold_after = 200, 5  # the backend waits after 5 until it is stopped
    timed.hold()
    seen = 0
    with httpx.stream(
        "POST",
        f"{stack.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {stack.client_token}"},
        json={"model": "timed", "messages": MSG, "stream": True},
        timeout=30,
    ) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                seen += 1
                if seen == 3:
                    break
    assert timed.aborted.wait(30), "the backend kept generating for nobody"
    assert not timed.finished.is_set()
    assert len(timed.produced_at) < timed.tokens


def test_a_long_generation_runs_async_and_events_resume_without_gap(
    stack: Stack, timed: FakeBackend, published: PublisherProcess
) -> None:
    # The backend stops halfway until the client has dropped its connection and come back
    # (as long as it takes: longer than API Gateway lets a request live, on AWS).
    timed.tokens, timed.hold_after = 80, 40
    timed.hold()
    h = {"Authorization": f"Bearer {stack.client_token}"}
    resp = httpx.post(
        f"{stack.url}{Paths.INFER.format(name='timed')}",
        headers={**h, "Prefer": "respond-async"},
        json={"messages": MSG, "stream": True},
        timeout=10,
    )
    assert resp.status_code == 202
    location = stack.url + resp.headers["location"]
    seen: list[tuple[str, str]] = []

    def read(headers: dict[str, str], stop_after: int | None) -> dict[str, Any] | None:
        event_id, kind = None, None
        with httpx.stream("GET", f"{location}/events", headers=headers, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    if kind == "end":
                        return dict(json.loads(line[6:]))
                    seen.append((event_id or "", line[6:]))
                    if stop_after and len(seen) >= stop_after:
                        return None
        return None

    try:
        assert read(h, stop_after=20) is None  # drop the connection mid-way
        state = httpx.get(location, headers=h).json()
        assert state["state"] == "claimed"
    finally:
        timed.release()
    end = read({**h, "Last-Event-ID": seen[-1][0]}, stop_after=None)
    assert end is not None and end["state"] == "completed"
    ids = [i for i, _ in seen]
    assert len(ids) == len(set(ids)), "an event came twice"
    text = "".join(
        (json.loads(d)["choices"] or [{}])[0].get("delta", {}).get("content") or "" for _, d in seen
    )
    assert text == timed.text(), "an event was lost"
    final = httpx.get(location, headers=h).json()
    assert final["state"] == "completed"


def test_five_megabyte_prompt_and_answer_round_trip_through_the_publisher(
    stack: Stack, published: PublisherProcess
) -> None:
    prompt = "ECHO:" + "".join(f"{i:07d}é" for i in range(5 * 1024 * 1024 // 9))
    assert len(prompt.encode()) > 5 * 1024 * 1024
    oai = openai.OpenAI(
        base_url=f"{stack.url}/v1", api_key=stack.client_token, max_retries=0, timeout=60
    )
    reply = oai.chat.completions.create(
        model="timed", messages=[{"role": "user", "content": prompt}]
    )
    assert reply.choices[0].message.content == prompt[::-1]
