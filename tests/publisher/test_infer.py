"""Posting answers to the relay's task endpoints: results, chunk batches, cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from natrelay.wire import Endpoint, ErrorCode, Paths
from natrelay_publisher.config import ProviderConfig
from natrelay_publisher.infer import TaskPoster, relay_stream, run_infer
from natrelay_publisher.providers import PROVIDERS, Provider
from natrelay_publisher.relay import RelayClient
from tests.publisher.fake_relay import TOO_LARGE, FakeRelay
from tests.support.api_backend import STREAMS
from tests.support.backend import REPLY, FakeBackend
from tests.support.net import serve

SESSION = "sess-0123456789"


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[str, FakeBackend]]:
    state = FakeBackend()
    with serve(state.app()) as url:
        yield url + "/v1", state


def provider(**fields: Any) -> Provider:
    config = ProviderConfig.model_validate({"name": "m", **fields})
    return PROVIDERS.find(config.type)(config)


def answer(relay_url: str, p: Provider, request: dict[str, Any], stream: bool) -> int:
    async def go() -> int:
        relay = RelayClient(relay_url, "token")
        try:
            return await run_infer(p, request, stream, TaskPoster(relay, lambda: SESSION, "t1"))
        finally:
            await relay.aclose()
            await p.aclose()

    return asyncio.run(go())


def chat(text: str = "hi", **fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}], **fields}


def test_non_streamed_result(
    relay: tuple[str, FakeRelay], backend: tuple[str, FakeBackend]
) -> None:
    url, fake = relay
    assert answer(url, provider(type="openai", baseUrl=backend[0], model="m"), chat(), False) == 200
    assert fake.calls("chunks") == []
    [result] = fake.calls("result")
    assert result["providerSessionId"] == SESSION
    assert result["status"] == 200
    assert result["body"]["choices"][0]["message"]["content"] == REPLY
    assert result["body"]["usage"]["total_tokens"] == 11


def test_backend_error_becomes_an_error_result(
    relay: tuple[str, FakeRelay], backend: tuple[str, FakeBackend]
) -> None:
    url, fake = relay
    answer(url, provider(type="openai", baseUrl=backend[0], model="fail-500"), chat(), False)
    answer(url, provider(type="openai", baseUrl="http://127.0.0.1:9/v1", model="m"), chat(), True)
    bad, down = fake.calls("result")
    assert bad["status"] == 500
    assert bad["error"] == {
        "message": "the backend answered 500 (its body is in the publisher's debug log)",
        "type": "upstream_error",  # as the relay answers backend_error
        "code": ErrorCode.BACKEND_ERROR,
        "param": None,
    }
    assert down["status"] == 502
    assert down["error"]["code"] == ErrorCode.BACKEND_ERROR
    assert down["error"]["message"].startswith("cannot reach the backend of m: ConnectError")


def test_stream_batches_in_order_then_result(relay: tuple[str, FakeRelay]) -> None:
    url, fake = relay
    text = " ".join(f"word{i}" for i in range(40))
    echo = provider(type="echo", options={"tokenDelayMs": 10})
    request = chat(text, stream=True, stream_options={"include_usage": True})
    assert answer(url, echo, request, True) == 200
    assert [b["seq"] for b in fake.calls("chunks")] == list(range(len(fake.calls("chunks"))))
    # 40 words 10 ms apart, flushed every 50 ms: several batches, each of several chunks.
    assert 3 <= len(fake.calls("chunks")) <= 20
    assert fake.text() == text
    [result] = fake.calls("result")
    assert result["chunkCount"] == len(fake.calls("chunks"))
    assert result["body"] == {
        "usage": {"prompt_tokens": 40, "completion_tokens": 40, "total_tokens": 80}
    }


def test_stream_batches_flush_by_size(relay: tuple[str, FakeRelay]) -> None:
    url, fake = relay

    async def big() -> AsyncIterator[dict[str, Any]]:
        for i in range(8):
            yield {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": f"{i}" * 20_000}}],
            }

    async def go() -> None:
        relay = RelayClient(url, "token")
        await relay_stream(big(), TaskPoster(relay, lambda: SESSION, "t1"))
        await relay.aclose()

    asyncio.run(go())
    # the first token alone, at once; then batches cut by size (two 20 KB chunks each)
    assert [len(b["chunks"]) for b in fake.calls("chunks")] == [1, 2, 2, 2, 1]
    assert fake.calls("result")[0]["chunkCount"] == 5 and fake.calls("result")[0]["body"] is None


def test_cancel_aborts_the_backend_and_posts_nothing_more(relay: tuple[str, FakeRelay]) -> None:
    url, fake = relay
    fake.cancel_after = 1  # then 409 task_cancelled: the client went away
    slow_backend = FakeBackend(tokens=200, interval=0.05)
    with serve(slow_backend.app()) as backend_url:
        slow = provider(type="openai", baseUrl=backend_url + "/v1", model="slow")
        started = time.monotonic()
        assert answer(url, slow, chat(stream=True), True) == 499
        assert time.monotonic() - started < 5  # the full stream would take 10 s
        assert slow_backend.aborted.wait(5)
    assert len(fake.calls("chunks")) == 2
    assert fake.calls("result") == []
    assert len(slow_backend.produced_at) < 100


def test_stream_failing_midway_posts_an_error(
    relay: tuple[str, FakeRelay], backend: tuple[str, FakeBackend]
) -> None:
    url, fake = relay
    broken = provider(type="openai", baseUrl=backend[0], model="break")
    assert answer(url, broken, chat(stream=True), True) == 502
    assert fake.text() == REPLY
    [result] = fake.calls("result")
    assert result["status"] == 502
    assert result["error"]["message"] == "out of memory"
    assert result["error"]["code"] == ErrorCode.BACKEND_ERROR


def test_refused_answers_still_end_the_task(relay: tuple[str, FakeRelay]) -> None:
    url, fake = relay
    fake.max_result_bytes = 400
    assert answer(url, provider(type="echo"), chat("x " * 300), False) == 200
    too_big, told = fake.calls("result")
    assert too_big["status"] == 200
    assert told["status"] == 502
    assert told["error"]["message"] == (
        f"the relay refused the answer: POST {Paths.TASK_RESULT.format(task_id='t1')} "
        f"answered 413 {ErrorCode.PAYLOAD_TOO_LARGE}: {TOO_LARGE}"
    )
    fake.clear()
    fake.refuse_chunks = True
    assert answer(url, provider(type="echo"), chat("a b c", stream=True), True) == 502
    [told] = fake.calls("result")
    assert told["error"]["message"].startswith("the relay refused a chunk batch: ")


def answer_to(
    relay_url: str, p: Provider, endpoint: Endpoint, request: dict[str, Any], stream: bool
) -> int:
    async def go() -> int:
        relay = RelayClient(relay_url, "token")
        poster = TaskPoster(relay, lambda: SESSION, "t1")
        try:
            return await run_infer(p, request, stream, poster, endpoint)
        finally:
            await relay.aclose()
            await p.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("endpoint", "request_body", "usage"),
    [
        (
            Endpoint.COMPLETIONS,
            {"prompt": "hi"},
            {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
        ),
        # the usage of `response.completed` (`response.created` has none yet)
        (
            Endpoint.RESPONSES,
            {"input": "hi"},
            {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
        ),
        # message_start's input tokens, and message_delta's (later) output tokens
        (
            Endpoint.MESSAGES,
            {"max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]},
            {"input_tokens": 5, "output_tokens": 2},
        ),
    ],
)
def test_streams_of_every_endpoint_are_posted_as_events_with_their_usage(
    relay: tuple[str, FakeRelay],
    endpoint: Endpoint,
    request_body: dict[str, Any],
    usage: dict[str, int],
) -> None:
    url, fake = relay
    before = len(fake.calls("result"))
    state = FakeBackend(tokens=4)
    with serve(state.app()) as backend_url:
        p = provider(type="openai", baseUrl=backend_url + "/v1", model="backend-model")
        request = {"model": "m", **request_body, "stream": True}
        assert answer_to(url, p, endpoint, request, True) == 200
    assert state.raw[-1][0] == endpoint.value
    sent = [c for batch in fake.calls("chunks") for c in batch["chunks"]]
    expected = [data for _, data in STREAMS[endpoint.value]("backend-model", state.pieces())]
    assert sent[-len(expected) :] == expected  # every event as the backend sent it, in order
    result = fake.calls("result")[before]
    assert result["body"] == {"usage": usage}


class ChatOnly:
    """A provider plugin that says nothing of endpoints: it serves chat only."""

    type_name = "chat-only"

    async def aclose(self) -> None:
        pass


def test_an_endpoint_the_provider_type_cannot_serve_is_refused(
    relay: tuple[str, FakeRelay],
) -> None:
    url, fake = relay
    body = {"model": "m", "input": "x"}
    assert answer_to(url, ChatOnly(), Endpoint.EMBEDDINGS, body, False) == 404  # type: ignore[arg-type]
    error = fake.calls("result")[-1]["error"]
    assert error["code"] == ErrorCode.ENDPOINT_NOT_SERVED
    assert "'chat-only' does not serve /v1/embeddings" in error["message"]
