from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from natrelay.wire import Endpoint, ErrorCode
from natrelay_publisher.config import ProviderConfig
from natrelay_publisher.errors import BackendFailedError
from natrelay_publisher.providers import PROVIDERS, Provider
from natrelay_publisher.providers.base import EndpointProvider
from tests.publisher.fakes import ollama_app
from tests.support.backend import REPLY, FakeBackend
from tests.support.net import serve

CHAT = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}


def provider(**fields: Any) -> Provider:
    config = ProviderConfig.model_validate({"name": "llama3", **fields})
    return PROVIDERS.find(config.type)(config)


async def collect(p: Provider, request: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        return [chunk async for chunk in p.stream(request)]
    finally:
        await p.aclose()


def send(fields: dict[str, Any], endpoint: Endpoint, request: dict[str, Any]) -> Any:
    """`request` to `endpoint` of a provider of `fields`."""
    return asyncio.run(_send(provider(**fields), endpoint, request))


async def _send(p: Provider, endpoint: Endpoint, request: dict[str, Any]) -> Any:
    try:
        return await cast(EndpointProvider, p).send(endpoint, request)
    finally:
        await p.aclose()


async def complete(p: Provider, request: dict[str, Any]) -> Any:
    try:
        return await p.complete(request)
    finally:
        await p.aclose()


def text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


@pytest.fixture(scope="module")
def openai_backend() -> Iterator[tuple[str, FakeBackend]]:
    state = FakeBackend()
    with serve(state.app()) as url:
        yield url + "/v1", state


@pytest.fixture(scope="module")
def ollama_backend() -> Iterator[tuple[str, FakeBackend]]:
    state = FakeBackend()
    with serve(ollama_app(state)) as url:
        yield url, state


# --- openai ------------------------------------------------------------------------------


def test_openai_complete_forwards_everything_but_the_model(
    openai_backend: tuple[str, FakeBackend],
) -> None:
    url, state = openai_backend
    request = {
        **CHAT,
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "response_format": {"type": "json_object"},
        "n": 2,
        "stop": ["x"],
        "seed": 7,
        "some_vendor_field": {"a": 1},
    }
    reply = asyncio.run(complete(provider(type="openai", baseUrl=url, model="backend-m"), request))
    assert reply.status == 200
    assert reply.body["choices"][0]["message"]["content"] == REPLY
    assert reply.body["usage"]["total_tokens"] == 11
    assert state.requests[-1] == {**request, "model": "backend-m"}


def test_openai_stream_parses_sse(openai_backend: tuple[str, FakeBackend]) -> None:
    url, state = openai_backend
    request = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    chunks = asyncio.run(collect(provider(type="openai", baseUrl=url, model="m"), request))
    assert text(chunks) == REPLY
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["total_tokens"] == 11
    assert state.requests[-1]["stream_options"] == {"include_usage": True}
    assert state.requests[-1]["stream"] is True


def test_openai_availability_and_models(openai_backend: tuple[str, FakeBackend]) -> None:
    url, _ = openai_backend

    async def check() -> tuple[bool, list[str], bool]:
        up = provider(type="openai", baseUrl=url, model="m")
        down = provider(type="openai", baseUrl="http://127.0.0.1:9/v1", model="m")
        try:
            return await up.available(), await up.models(), await down.available()
        finally:
            await up.aclose()
            await down.aclose()

    assert asyncio.run(check()) == (True, ["m1", "m2"], False)


@pytest.mark.parametrize(
    ("model", "status", "message"),
    [
        ("fail-400", 400, "this model does not exist"),
        # a body that is no JSON error stays here (an HTML page may name internal hosts)
        ("fail-500", 500, "the backend answered 500 (its body is in the publisher's debug log)"),
        ("bad-json", 502, "the backend answered invalid JSON"),
    ],
)
def test_openai_backend_errors(
    openai_backend: tuple[str, FakeBackend], model: str, status: int, message: str
) -> None:
    url, _ = openai_backend
    with pytest.raises(BackendFailedError) as caught:
        asyncio.run(complete(provider(type="openai", baseUrl=url, model=model), CHAT))
    assert caught.value.status == status
    assert message in caught.value.message
    assert "fire" not in caught.value.message


def test_openai_stream_errors(openai_backend: tuple[str, FakeBackend]) -> None:
    url, _ = openai_backend
    stream = {**CHAT, "stream": True}
    with pytest.raises(BackendFailedError, match="this model does not exist") as caught:
        asyncio.run(collect(provider(type="openai", baseUrl=url, model="fail-400"), stream))
    assert caught.value.status == 400
    with pytest.raises(BackendFailedError, match="out of memory"):
        asyncio.run(collect(provider(type="openai", baseUrl=url, model="break"), stream))


def test_openai_stream_closed_early_is_a_backend_error(
    openai_backend: tuple[str, FakeBackend],
) -> None:
    url, _ = openai_backend
    stream = {**CHAT, "stream": True}
    # The body ends cleanly after some pieces, without a finish_reason or `data: [DONE]`.
    with pytest.raises(BackendFailedError, match="closed the stream early") as caught:
        asyncio.run(collect(provider(type="openai", baseUrl=url, model="truncate"), stream))
    assert caught.value.status == 502
    with pytest.raises(BackendFailedError, match="invalid JSON in its stream"):
        asyncio.run(collect(provider(type="openai", baseUrl=url, model="garbage"), stream))
    # Not an event stream at all: nothing ends it properly either.
    with pytest.raises(BackendFailedError, match="closed the stream early"):
        asyncio.run(collect(provider(type="openai", baseUrl=url, model="bad-json"), stream))


async def _sse_server_stream(lines: list[str]) -> list[dict[str, Any]]:
    """The openai provider reading a backend that sends exactly `lines` of SSE."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for line in lines:
            await send({"type": "http.response.body", "body": line.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    with serve(app) as url:
        return await collect(provider(type="openai", baseUrl=url, model="m"), {**CHAT})


def test_openai_stream_ends_with_done_or_finish_reasons() -> None:
    def event(index: int, finish: str | None) -> str:
        choice = {"index": index, "delta": {"content": "x"}, "finish_reason": finish}
        return f"data: {json.dumps({'choices': [choice]})}\n\n"

    # A finish_reason for every choice is a proper end, even without [DONE] (lenient) ...
    finished = [event(0, None), event(1, None), event(0, "stop"), event(1, "length")]
    assert len(asyncio.run(_sse_server_stream(finished))) == 4
    # ... one choice of two left unfinished is not.
    with pytest.raises(BackendFailedError, match="closed the stream early"):
        asyncio.run(_sse_server_stream([event(0, None), event(1, None), event(0, "stop")]))
    assert len(asyncio.run(_sse_server_stream([event(0, "stop"), "data: [DONE]\n\n"]))) == 1
    usage = 'data: {"choices": [], "usage": {"total_tokens": 3}}\n\n'
    assert len(asyncio.run(_sse_server_stream([event(0, "stop"), usage, "data: [DONE]\n\n"]))) == 2
    # [DONE] with a choice unfinished: an answer cut short (llama-cpp-python's server sends
    # exactly this when another request interrupts its stream), not a finished one.
    with pytest.raises(
        BackendFailedError, match=r"before the answer's finish_reason.*cut it short"
    ):
        asyncio.run(_sse_server_stream([event(0, None), "data: [DONE]\n\n"]))


def test_openai_backend_that_hangs_times_out(openai_backend: tuple[str, FakeBackend]) -> None:
    url, _ = openai_backend
    started = time.monotonic()
    hung = provider(type="openai", baseUrl=url, model="hang", timeoutSeconds=0.5)
    with pytest.raises(BackendFailedError) as caught:
        asyncio.run(complete(hung, CHAT))
    assert caught.value.message == "the backend of llama3 did not answer within 0.5 s"
    assert caught.value.status == 504
    # Streamed: the first piece, then silence.
    hung = provider(type="openai", baseUrl=url, model="hang", timeoutSeconds=0.5)
    seen: list[dict[str, Any]] = []

    async def read() -> None:
        try:
            async for chunk in hung.stream({**CHAT, "stream": True}):
                seen.append(chunk)
        finally:
            await hung.aclose()

    with pytest.raises(BackendFailedError, match=r"^the backend of llama3 sent nothing for 0.5 s"):
        asyncio.run(read())
    assert len(seen) == 1
    assert time.monotonic() - started < 5


def test_openai_backend_down() -> None:
    down = provider(type="openai", baseUrl="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(BackendFailedError, match=r"^cannot reach the backend of llama3: Connect"):
        asyncio.run(complete(down, CHAT))
    down = provider(type="openai", baseUrl="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(BackendFailedError, match="cannot reach the backend") as caught:
        asyncio.run(collect(down, {**CHAT, "stream": True}))
    assert caught.value.status == 502


def test_openai_api_key_is_sent(
    openai_backend: tuple[str, FakeBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = openai_backend
    monkeypatch.setenv("NATRELAY_TEST_KEY", "sk-local")
    p = provider(type="openai", baseUrl=url, model="m", apiKey={"env": "NATRELAY_TEST_KEY"})
    client = p._client  # type: ignore[attr-defined]
    assert client.headers["authorization"] == "Bearer sk-local"
    asyncio.run(p.aclose())


@pytest.mark.parametrize(
    ("endpoint", "request_body", "missing"),
    [
        (Endpoint.COMPLETIONS, {"prompt": "x"}, "no `data: [DONE]` and no finish_reason"),
        (Endpoint.RESPONSES, {"input": "x"}, "no error or response.completed or"),
        (
            Endpoint.MESSAGES,
            {"max_tokens": 5, "messages": CHAT["messages"]},
            "no error or message_stop",
        ),
    ],
)
def test_a_stream_of_any_endpoint_that_stops_short_is_a_backend_error(
    openai_backend: tuple[str, FakeBackend],
    endpoint: Endpoint,
    request_body: dict[str, Any],
    missing: str,
) -> None:
    url, _ = openai_backend

    async def read() -> list[Any]:
        p = provider(type="openai", baseUrl=url, model="truncate")
        try:
            stream = cast(EndpointProvider, p).send_stream(endpoint, {"model": "m", **request_body})
            return [event async for event in stream]
        finally:
            await p.aclose()

    with pytest.raises(BackendFailedError, match="closed the stream early") as caught:
        asyncio.run(read())
    assert missing in caught.value.message


# --- ollama ------------------------------------------------------------------------------


def test_ollama_complete_translates_both_ways(ollama_backend: tuple[str, FakeBackend]) -> None:
    url, state = ollama_backend
    request = {
        **CHAT,
        "temperature": 0.2,
        "max_tokens": 50,
        "stop": "END",
        "seed": 3,
        "response_format": {"type": "json_object"},
    }
    reply = asyncio.run(complete(provider(type="ollama", baseUrl=url, model="llama3:8b"), request))
    sent = state.requests[-1]
    assert sent["model"] == "llama3:8b" and sent["stream"] is False
    assert sent["messages"] == [{"role": "user", "content": "hi"}]
    assert sent["options"] == {"temperature": 0.2, "num_predict": 50, "stop": ["END"], "seed": 3}
    assert sent["format"] == "json"
    body = reply.body
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": REPLY}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}


def test_ollama_stream_ndjson_to_chunks(ollama_backend: tuple[str, FakeBackend]) -> None:
    url, _ = ollama_backend
    request = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    chunks = asyncio.run(collect(provider(type="ollama", baseUrl=url, model="llama3"), request))
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert text(chunks) == REPLY
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["total_tokens"] == 14


def test_ollama_stream_without_done_is_a_backend_error(
    ollama_backend: tuple[str, FakeBackend],
) -> None:
    url, _ = ollama_backend
    with pytest.raises(BackendFailedError, match="closed the stream early") as caught:
        asyncio.run(
            collect(
                provider(type="ollama", baseUrl=url, model="truncate"), {**CHAT, "stream": True}
            )
        )
    assert caught.value.status == 502


def test_ollama_availability_models_and_errors(ollama_backend: tuple[str, FakeBackend]) -> None:
    url, _ = ollama_backend

    async def check() -> tuple[bool, list[str]]:
        p = provider(type="ollama", baseUrl=url, model="llama3")
        try:
            return await p.available(), await p.models()
        finally:
            await p.aclose()

    assert asyncio.run(check()) == (True, ["llama3:latest", "qwen2:7b"])
    with pytest.raises(BackendFailedError, match="model 'missing' not found") as caught:
        asyncio.run(complete(provider(type="ollama", baseUrl=url, model="missing"), CHAT))
    assert caught.value.status == 404
    with pytest.raises(BackendFailedError, match="model 'missing' not found"):
        asyncio.run(
            collect(provider(type="ollama", baseUrl=url, model="missing"), {**CHAT, "stream": True})
        )
    down = provider(type="ollama", baseUrl="http://127.0.0.1:9", model="m")
    assert asyncio.run(down.available()) is False
    with pytest.raises(BackendFailedError, match="cannot reach the backend"):
        asyncio.run(complete(down, CHAT))


def test_ollama_embeddings_through_its_native_api() -> None:
    state = FakeBackend()
    with serve(ollama_app(state)) as url:
        fields = {"type": "ollama", "baseUrl": url, "model": "nomic-embed-text"}
        request = {"model": "x", "input": ["ab", "abcd"], "dimensions": 2, "user": "u"}
        reply = send(fields, Endpoint.EMBEDDINGS, request)
        # Ollama's /api/embed takes the texts and dimensions (not the OpenAI-only fields)
        assert state.requests[-1] == {
            "model": "nomic-embed-text",
            "input": ["ab", "abcd"],
            "dimensions": 2,
        }
        assert reply.body == {
            "object": "list",
            "data": [
                {"object": "embedding", "index": 0, "embedding": [0.5, 0.75]},
                {"object": "embedding", "index": 1, "embedding": [1.0, 1.25]},
            ],
            "model": "nomic-embed-text",
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        }
        as_base64 = {"model": "x", "input": "abcd", "encoding_format": "base64"}
        packed = send(fields, Endpoint.EMBEDDINGS, as_base64).body["data"][0]["embedding"]
        assert struct.unpack("<3f", base64.b64decode(packed)) == (1.0, 1.25, 1.5)
        with pytest.raises(BackendFailedError, match="Ollama embeds text only") as caught:
            send(fields, Endpoint.EMBEDDINGS, {"model": "x", "input": [[1, 2, 3]]})
        assert caught.value.status == 400


def test_ollama_other_endpoints_through_its_compatible_api() -> None:
    state = FakeBackend(missing=frozenset({"messages"}))
    with serve(ollama_app(state)) as url:
        fields = {"type": "ollama", "baseUrl": url, "model": "llama3"}
        request = {"model": "x", "prompt": "say", "max_tokens": 3}
        reply = send(fields, Endpoint.COMPLETIONS, request)
        assert state.raw[-1][0] == "completions"
        assert state.requests[-1] == {**request, "model": "llama3"}
        assert reply.body["choices"][0]["text"] == REPLY
        # an Ollama without the Messages API: the client hears the model does not serve it
        message = {"model": "x", "max_tokens": 3, "messages": CHAT["messages"]}
        with pytest.raises(BackendFailedError, match="does not serve /v1/messages") as caught:
            (send(fields, Endpoint.MESSAGES, message))
        assert (caught.value.status, caught.value.code) == (404, ErrorCode.ENDPOINT_NOT_SERVED)


# --- echo --------------------------------------------------------------------------------

TEXT = "  Hello,   wide\n world!  "


def echo_request(**fields: Any) -> dict[str, Any]:
    return {
        "model": "echo",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": TEXT}]},
        ],
        **fields,
    }


def test_echo_complete_is_verbatim_with_word_usage() -> None:
    reply = asyncio.run(complete(provider(type="echo"), echo_request()))
    assert reply.status == 200
    assert reply.body["choices"][0]["message"]["content"] == TEXT
    assert reply.body["usage"]["completion_tokens"] == 3
    assert reply.body["usage"]["prompt_tokens"] == 2 + 1 + 1 + 3


def test_echo_streams_word_by_word() -> None:
    chunks = asyncio.run(collect(provider(type="echo"), echo_request(stream=True)))
    contents = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert contents[1:-1] == ["  Hello,", "   wide", "\n world!", "  "]
    assert text(chunks) == TEXT
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    with_usage = asyncio.run(
        collect(
            provider(type="echo"), echo_request(stream=True, stream_options={"include_usage": True})
        )
    )
    assert with_usage[-1]["usage"]["completion_tokens"] == 3


def test_echo_token_delay() -> None:
    request = {"model": "echo", "messages": [{"role": "user", "content": "a b c d e"}]}
    started = time.monotonic()
    chunks = asyncio.run(collect(provider(type="echo", options={"tokenDelayMs": 60}), request))
    assert time.monotonic() - started >= 5 * 0.06
    assert text(chunks) == "a b c d e"


def test_echo_availability_url() -> None:
    asleep = provider(type="echo", options={"availabilityUrl": "http://127.0.0.1:9/ready"})
    assert asyncio.run(asleep.available()) is False
    with pytest.raises(BackendFailedError, match="asleep") as caught:
        asyncio.run(complete(asleep, echo_request()))
    assert caught.value.status == 503
