"""Opt-in (`scripts/llama test`, or NATRELAY_LLAMA=1 pytest -m llama): the official openai
client -> a real relay (uvicorn, moto) -> a real publisher -> a real llama.cpp backend,
llama-cpp-python's server on a tiny GGUF model (tests/support/llama.py).

What this backend does that fakes may not: it runs one request at a time and answers
nothing else meanwhile, `GET /v1/models` included; and it cuts a stream short, ending it
with `data: [DONE]` and no finish_reason, when another request arrives meanwhile.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from natrelay_infra.moto_server import MotoProcess
from tests.e2e.test_openai_shapes import assert_openai
from tests.publisher.running import PublisherProcess, publishing
from tests.support.llama import ALIAS, llama_server
from tests.support.stack import Server, Stack, running_stack

pytestmark = pytest.mark.llama

# (A base model, not tuned for chat: what it says is beside the point; that it says
# something is not, and with a system message it does.)
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
ASK = [SYSTEM, {"role": "user", "content": "Name three colours of the rainbow."}]
LONG = [SYSTEM, {"role": "user", "content": "Write a long story about a lighthouse keeper."}]
# Greedy decoding: the same prompt gives the same answer, streamed or not.
GREEDY: dict[str, Any] = {"temperature": 0.0, "seed": 1}


def member(name: str, url: str, **fields: Any) -> dict[str, Any]:
    """A publisher's provider for the llama server at `url`."""
    return {
        "name": name,
        "type": "openai",
        "baseUrl": f"{url}/v1",
        "model": ALIAS,
        "maxConcurrency": 1,  # the server runs one request at a time
        "healthTimeoutSeconds": 1,
        **fields,
    }


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server as a user starts it: llama-cpp-python's defaults (interrupt_requests on)."""
    with llama_server(tmp_path_factory.mktemp("llama") / "llama.log") as server:
        yield server


@pytest.fixture(scope="module")
def relay(moto_server: MotoProcess) -> Iterator[Stack]:
    with running_stack(moto_server.endpoint, heartbeat_timeout_seconds=5) as running:
        yield running


@pytest.fixture(scope="module")
def published(
    relay: Stack, llama: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PublisherProcess]:
    tmp = tmp_path_factory.mktemp("publisher")
    with publishing(relay, tmp, [member("gemma", llama.url)], {"gemma": "active"}) as publisher:
        yield publisher


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack.url}/v1", api_key=stack.client_token, max_retries=0, timeout=300
    )


def pool_row(stack: Stack, name: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    row: dict[str, Any] = httpx.get(f"{stack.url}/api/v1/llms/{name}", headers=headers).json()
    return row


def stream_long(
    stack: Stack,
    model: str,
    pieces: list[str],
    max_tokens: int = 160,
    answers: list[ChatCompletion] | None = None,
) -> str | None:
    """Stream a long answer of `model` into `pieces`: its finish_reason. With `answers`,
    a short request to the same model is sent once three pieces have come, and its
    answer added there (even if the stream fails)."""
    oai = client(stack)
    finish = None
    with ThreadPoolExecutor(1) as pool:
        asked = []
        stream = oai.chat.completions.create(
            model=model,
            messages=LONG,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            stream=True,
            **GREEDY,
        )
        try:
            for chunk in stream:
                if not chunk.choices:
                    continue
                if chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
                    if len(pieces) == 3 and answers is not None:
                        short = {"model": model, "messages": ASK, "max_tokens": 8}
                        asked.append(pool.submit(oai.chat.completions.create, **short))
                finish = chunk.choices[0].finish_reason or finish
        finally:
            if answers is not None:
                answers.extend(job.result() for job in asked)
    return finish


def test_the_model_list_names_the_published_model(
    relay: Stack, published: PublisherProcess
) -> None:
    models = client(relay).models.list()
    assert [m.id for m in models.data] == ["gemma"]
    assert_openai("ListModelsResponse", models.model_dump(mode="json", exclude_unset=True))


def test_a_chat_answer(relay: Stack, published: PublisherProcess) -> None:
    reply = client(relay).chat.completions.create(
        model="gemma",
        messages=ASK,  # type: ignore[arg-type]
        max_tokens=24,
        **GREEDY,
    )
    # (Not checked against OpenAI's document: llama-cpp-python's message has no `refusal`,
    # which the document requires and the SDKs do not. The relay passes it on as it is.)
    assert reply.model == "gemma"  # the published name, not the backend's (a file path)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 5 and 0 < reply.usage.completion_tokens <= 24
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_a_stream_adds_up_to_the_answer(relay: Stack, published: PublisherProcess) -> None:
    oai = client(relay)
    whole = oai.chat.completions.create(
        model="gemma",
        messages=ASK,  # type: ignore[arg-type]
        max_tokens=24,
        **GREEDY,
    )
    chunks = list(
        oai.chat.completions.create(
            model="gemma",
            messages=ASK,  # type: ignore[arg-type]
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
            **GREEDY,
        )
    )
    for chunk in chunks:
        assert_openai(
            "CreateChatCompletionStreamResponse", chunk.model_dump(mode="json", exclude_unset=True)
        )
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 1  # token by token, not one block
    assert "".join(pieces) == whole.choices[0].message.content
    finished = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finished == [whole.choices[0].finish_reason]
    assert {c.id for c in chunks} == {chunks[0].id}
    assert {c.model for c in chunks} == {"gemma"}
    # llama-cpp-python 0.3.36 ignores include_usage, and the relay invents no usage.
    assert [c.usage for c in chunks if c.usage is not None] == []


def test_the_server_cuts_a_stream_short_for_a_listing(llama: Server) -> None:
    # Asked directly, not through the relay: what a publisher's check would do to it.
    # `GET /v1/models` waits for the model's lock while a stream runs, and the stream,
    # seeing a request wait, ends at once: [DONE], no finish_reason. Then the listing
    # is answered.
    body = {"model": ALIAS, "messages": LONG, "max_tokens": 200, "stream": True, **GREEDY}
    events: list[str] = []
    with ThreadPoolExecutor(1) as pool, httpx.Client(timeout=300) as http:
        with http.stream("POST", f"{llama.url}/v1/chat/completions", json=body) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    events.append(line.removeprefix("data: "))
                if len(events) == 3:
                    listing = pool.submit(http.get, f"{llama.url}/v1/models")
        assert listing.result().status_code == 200
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) < 100  # of up to 200 tokens
    assert all(c["choices"][0].get("finish_reason") is None for c in chunks)


def test_a_long_generation_keeps_its_member_active(
    relay: Stack, published: PublisherProcess
) -> None:
    # Heartbeats every second while the backend generates for several seconds: a check
    # of its model list would wait (unavailable after two) or cut the stream short.
    logged = len(published.log())
    statuses: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            statuses.append(pool_row(relay, "gemma")["status"])
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    pieces: list[str] = []
    answers: list[ChatCompletion] = []
    try:
        # a second request queues behind it, in the relay
        finish = stream_long(relay, "gemma", pieces, answers=answers)
    finally:
        stop.set()
        watcher.join()
    assert finish in ("stop", "length") and len(pieces) > 20
    assert len(answers) == 1 and answers[0].choices[0].message.content
    assert statuses and set(statuses) == {"active"}, statuses
    log = published.log()[logged:]
    assert "is down" not in log and "unavailable" not in log, log


def test_a_stream_the_backend_cuts_short_is_an_error(
    relay: Stack, tmp_path: Path, llama_other: Server
) -> None:
    # Two requests at once to llama-cpp-python's server: the one waiting ends the
    # stream in progress with [DONE] and no finish_reason. The client hears so; it must
    # not take the text so far for the whole answer.
    provider = member("gemma-two", llama_other.url, maxConcurrency=2)
    pieces: list[str] = []
    answers: list[ChatCompletion] = []
    with (
        publishing(relay, tmp_path, [provider], {"gemma-two": "active"}),
        pytest.raises(openai.APIError, match="cut it short") as caught,
    ):
        stream_long(relay, "gemma-two", pieces, max_tokens=200, answers=answers)
    assert "interrupt_requests" in str(caught.value)
    assert 3 <= len(pieces) < 200
    assert len(answers) == 1 and answers[0].choices[0].finish_reason in ("stop", "length")


def test_two_names_of_one_server_leave_each_other_s_streams_whole(
    relay: Stack, tmp_path: Path, llama_other: Server
) -> None:
    # The idle name's checks (every heartbeat) would reach the server while the other
    # name streams, and cut that stream short: they wait for it, as its own would.
    providers = [member("gemma-a", llama_other.url), member("gemma-b", llama_other.url)]
    pieces: list[str] = []
    with publishing(relay, tmp_path, providers, {"gemma-a": "active", "gemma-b": "active"}):
        finish = stream_long(relay, "gemma-a", pieces)
    assert finish in ("stop", "length") and len(pieces) > 20


@pytest.fixture
def llama_other(tmp_path: Path) -> Iterator[Server]:
    """A server of its own: the module's is the other publisher's, which checks it."""
    with llama_server(tmp_path / "llama.log") as server:
        yield server
