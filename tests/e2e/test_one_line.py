"""Publish in one line, end to end: a fake Ollama found by `--detect` (on a port the test
names in NATRELAY_DETECT_PORTS) and a fake OpenAI-compatible server named by `--backend`,
published by one `natrelay publish` process against a real relay (uvicorn, moto), called
with the official `openai` SDK.

The answers through the relay are the backends' own; a model pulled later is published and
answers, a model removed goes; a backend that is no LLM server, one where nothing listens,
and a model two backends serve each get one line in the log, and the rest is published.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.publisher.fakes import ollama_app
from tests.publisher.running import PublisherProcess, run_publish, wait_rows
from tests.publisher.test_detect import not_an_llm
from tests.support.backend import FakeBackend
from tests.support.net import closed_port, serve, wait_until
from tests.support.stack import Stack

pytestmark = pytest.mark.slow

USER = [{"role": "user", "content": "hello from one line"}]
# Bounds for what the publisher does every --refresh-seconds: generous, never waited out.
APPEARS_WITHIN = 60.0


@dataclass
class Box:
    """The backends on the box: their URLs, and what each lists (changed by the test)."""

    ollama_url: str
    ollama_models: list[str]
    ollama: FakeBackend
    openai_url: str
    openai: FakeBackend
    web_url: str
    closed_url: str


@pytest.fixture
def box() -> Iterator[Box]:
    models = ["llama3:latest", "qwen2:7b"]
    ollama = FakeBackend(reply="Ollama answers, word by word.")
    # qwen2:7b is Ollama's too: a backend named by --backend comes before those --detect
    # finds, and the first to serve a name keeps it.
    served = FakeBackend(reply="The OpenAI server answers.", models=("gpt-oss-20b", "qwen2:7b"))
    with ExitStack() as stack:
        ollama_url = stack.enter_context(serve(ollama_app(ollama, models)))
        openai_url = stack.enter_context(serve(served.app()))
        web_url = stack.enter_context(serve(not_an_llm()))
        closed = stack.enter_context(closed_port())
        yield Box(ollama_url, models, ollama, openai_url, served, web_url, closed)


@pytest.fixture
def published(stack: Stack, box: Box, tmp_path: Path) -> Iterator[PublisherProcess]:
    env = {
        "NATRELAY_URL": stack.url,
        "NATRELAY_PUBLISH_TOKEN": stack.publish_token,
        "NATRELAY_DETECT_PORTS": box.ollama_url.rsplit(":", 1)[1],
    }
    args = ["--detect", "--backend", box.openai_url, "--backend", box.web_url]
    args += ["--backend", box.closed_url, "--refresh-seconds", "0.5"]
    args += ["--session-file", str(tmp_path / "state" / "session.json")]
    publisher = run_publish(args, tmp_path, env=env)
    try:
        wait_rows(stack, {"llama3": "active", "qwen2:7b": "active", "gpt-oss-20b": "active"})
        yield publisher
    finally:
        assert publisher.stop(signal.SIGTERM) == 0, publisher.log()


def client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def listed(stack: Stack) -> dict[str, list[str]]:
    """The models /v1/models lists, with their aliases."""
    models = client(stack.url, stack.client_token).models.list().data
    return {m.id: list((m.model_extra or {}).get("aliases") or []) for m in models}


def ask(url: str, key: str, model: str) -> str:
    reply = client(url, key).chat.completions.create(model=model, messages=USER)  # type: ignore[arg-type]
    return reply.choices[0].message.content or ""


def ollama_says(box: Box, model: str) -> str:
    """What the Ollama answers itself, on its native API."""
    answer = httpx.post(
        f"{box.ollama_url}/api/chat",
        json={"model": model, "messages": USER, "stream": False},
        timeout=10,
    )
    return str(answer.json()["message"]["content"])


def test_one_command_publishes_what_the_backends_serve(
    stack: Stack, box: Box, published: PublisherProcess
) -> None:
    models = listed(stack)
    assert set(models) == {"llama3", "qwen2:7b", "gpt-oss-20b"}
    assert models["llama3"] == ["llama3:latest"]

    # Through the relay, each answer is its backend's, asked with the backend's model id.
    via_relay = client(stack.url, stack.client_token).chat.completions.create(
        model="gpt-oss-20b",
        messages=USER,  # type: ignore[arg-type]
    )
    direct = client(box.openai_url, "any").chat.completions.create(
        model="gpt-oss-20b",
        messages=USER,  # type: ignore[arg-type]
    )
    assert via_relay.choices == direct.choices
    assert via_relay.usage == direct.usage
    assert box.openai.requests[-2]["model"] == "gpt-oss-20b"
    for name, model in (("llama3", "llama3:latest"), ("llama3:latest", "llama3:latest")):
        assert ask(stack.url, stack.client_token, name) == ollama_says(box, model)
        assert box.ollama.requests[-2]["model"] == model
    assert ask(stack.url, stack.client_token, "qwen2:7b") == "The OpenAI server answers."
    assert box.openai.requests[-1]["model"] == "qwen2:7b"

    published.wait_log("publishing llama3 (aliases llama3:latest): llama3:latest on Ollama")
    said_once(published, box)


def said_once(published: PublisherProcess, box: Box) -> None:
    """One line each for what could not be published, however often it was listed."""
    log = published.log()
    assert log.count(f"--backend {box.web_url} answers HTTP but is not an LLM server") == 1
    assert log.count(f"--backend {box.closed_url} nothing answers there") == 1
    shared = (
        f"qwen2:7b of {box.ollama_url} is not published: qwen2:7b is already published "
        f"from {box.openai_url}/v1"
    )
    assert log.count(shared) == 1


def test_models_pulled_and_removed_are_published_and_unpublished(
    stack: Stack, box: Box, published: PublisherProcess
) -> None:
    # `ollama pull phi4`, and gpt-oss-20b taken off the OpenAI server, together: usually
    # one registration (on a long-polling relay, each waits for the poll in flight).
    box.ollama_models.append("phi4:latest")
    box.openai.models = ("qwen2:7b",)
    wait_until(
        lambda: set(listed(stack)) == {"llama3", "qwen2:7b", "phi4"},
        APPEARS_WITHIN,
        lambda: f"the models never changed: {listed(stack)}",
    )
    assert ask(stack.url, stack.client_token, "phi4") == ollama_says(box, "phi4:latest")
    assert box.ollama.requests[-2]["model"] == "phi4:latest"
    with pytest.raises(openai.APIStatusError) as gone:
        ask(stack.url, stack.client_token, "gpt-oss-20b")
    assert gone.value.status_code in (404, 503)
    # The others were served all along by the same session.
    assert ask(stack.url, stack.client_token, "llama3") == ollama_says(box, "llama3:latest")
    # Listed many times by now (every 0.5 s, and changed once): each line still said once.
    said_once(published, box)
    log = published.log()
    assert "unpublishing gpt-oss-20b" in log
    assert log.count("registered session") >= 2
    sessions = {
        line.split("registered session ")[1][:10]
        for line in log.splitlines()
        if "registered session" in line
    }
    assert len(sessions) == 1
