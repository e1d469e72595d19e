"""Every relayed API through `natrelay dev`, a real publisher and fake backends, with
the official `openai` and `anthropic` SDKs: what reaches the backend is what the client
sent (but the model name), and what the client reads is what the backend answered.

Each call is made twice, through the relay and straight to the backend, with the same
SDK: the two requests the backend saw must be the same bytes, and the two answers the
SDK parsed the same objects (but the model name, which the relay makes its own).
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from natrelay_infra.dev import DEV_CLIENT_TOKEN, DEV_PUBLISH_TOKEN
from tests.infra.test_dev import Dev, natrelay_dev
from tests.publisher.running import start_publisher, wait_rows
from tests.support.backend import FakeBackend
from tests.support.net import serve, wait_until
from tests.support.stack import dynamodb_client

BACKEND_MODEL = "org/backend-model"
ALIAS = "meta-llama/Llama-3.1-8B-Instruct"
USER = [{"role": "user", "content": "hello relay"}]


class Relayed:
    """natrelay dev with a publisher of three models: `full` (every endpoint, two
    aliases), `chat-only` (its config lists chat alone) and `lacking` (a backend that
    answers 404 for responses and messages)."""

    def __init__(self, dev: Dev, full: FakeBackend, lacking: FakeBackend, urls: list[str]):
        self.dev, self.full, self.lacking = dev, full, lacking
        self.url = dev.url
        self.full_url, self.lacking_url = urls

    def oai(self, direct: bool = False) -> openai.OpenAI:
        base = f"{self.full_url}/v1" if direct else f"{self.url}/v1"
        return openai.OpenAI(base_url=base, api_key=DEV_CLIENT_TOKEN, max_retries=0, timeout=30)

    def claude(self, direct: bool = False, key: str = DEV_CLIENT_TOKEN) -> anthropic.Anthropic:
        base = self.full_url if direct else self.url
        return anthropic.Anthropic(base_url=base, api_key=key, max_retries=0, timeout=30)

    def infer_tasks(self, llm: str) -> int:
        match = self.dev.wait_for(r"DynamoDB:\s+(\S+) \(tables [^,\s]+, ([^,\s)]+)")
        items = dynamodb_client(match[1]).scan(
            TableName=match[2],
            FilterExpression="llm = :llm AND kind = :infer",
            ExpressionAttributeValues={":llm": {"S": llm}, ":infer": {"S": "infer"}},
        )["Items"]
        return len(items)


@pytest.fixture(scope="module")
def relayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relayed]:
    tmp = tmp_path_factory.mktemp("endpoints")
    full = FakeBackend(reply="relayed word by word", interval=0.01)
    lacking = FakeBackend(missing=frozenset({"responses", "messages"}))
    with ExitStack() as stack:
        urls = [stack.enter_context(serve(b.app())) for b in (full, lacking)]
        dev = stack.enter_context(natrelay_dev(tmp, "--heartbeat-timeout", "10"))
        dev.wait_for(r"^Ctrl-C stops everything")
        openai_type = {"type": "openai", "model": BACKEND_MODEL}
        providers = [
            {"name": "full", "baseUrl": f"{urls[0]}/v1", "aliases": ["full-alias", ALIAS]},
            {"name": "chat-only", "baseUrl": f"{urls[0]}/v1", "endpoints": ["chat"]},
            {"name": "lacking", "baseUrl": f"{urls[1]}/v1"},
        ]
        echo = {"name": "echo", "type": "echo"}  # as the README's examples call it
        config = {
            "relay": {
                "url": dev.url,
                "token": DEV_PUBLISH_TOKEN,
                "sessionFile": str(tmp / "state" / "session.json"),
                "heartbeatSeconds": 1,
                "pollWaitSeconds": 5,
            },
            "providers": [*({**openai_type, **p} for p in providers), echo],
        }
        publisher = start_publisher(config, tmp)
        stack.callback(publisher.stop)
        target = types.SimpleNamespace(url=dev.url, client_token=DEV_CLIENT_TOKEN)
        wait_rows(target, dict.fromkeys(("full", "chat-only", "lacking", "echo"), "active"))  # type: ignore[arg-type]
        yield Relayed(dev, full, lacking, urls)


def _without_model(value: Any) -> Any:
    """`value` with every `model` field blanked: the relay names its own model."""
    if isinstance(value, dict):
        return {k: None if k == "model" else _without_model(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_model(v) for v in value]
    return value


def _dumps(objects: Any) -> Any:
    return _without_model([o.model_dump() for o in objects])


def _same_bytes(backend: FakeBackend, endpoint: str, *, usage_asked: bool = False) -> None:
    """The backend's last two requests (through the relay, then direct) were one body
    (`usage_asked`: but for the relay asking a stream for its usage, to count it)."""
    (first, relayed), (second, direct) = backend.raw[-2:]
    assert first == second == endpoint
    if usage_asked:
        direct = direct[:-1] + b',"stream_options":{"include_usage":true}}'
    assert relayed == direct, (relayed, direct)
    assert BACKEND_MODEL.encode() in relayed


def test_models_say_their_endpoints_and_aliases(relayed: Relayed) -> None:
    models = {m.id: m for m in relayed.oai().models.list()}
    assert set(models) == {"full", "chat-only", "lacking", "echo"}  # aliases are not entries
    full = models["full"].model_dump()
    assert full["endpoints"] == ["chat", "completions", "embeddings", "responses", "messages"]
    assert full["aliases"] == ["full-alias", ALIAS]
    assert models["chat-only"].model_dump()["endpoints"] == ["chat"]
    assert relayed.oai().models.retrieve(ALIAS).id == "full"


def test_embeddings(relayed: Relayed) -> None:
    for kwargs in ({}, {"encoding_format": "float", "dimensions": 3}):
        through = relayed.oai().embeddings.create(model="full", input=["a b", "c"], **kwargs)  # type: ignore[arg-type]
        direct = relayed.oai(direct=True).embeddings.create(
            model=BACKEND_MODEL,
            input=["a b", "c"],
            **kwargs,  # type: ignore[arg-type]
        )
        _same_bytes(relayed.full, "embeddings")
        assert through.model == "full"
        assert _dumps([through]) == _dumps([direct])
        assert len(through.data) == 2 and through.data[0].embedding


def test_completions_plain_and_streamed(relayed: Relayed) -> None:
    oai, direct = relayed.oai(), relayed.oai(direct=True)
    prompt = {"prompt": "say it", "max_tokens": 5, "temperature": 0.5, "seed": 3}
    through = oai.completions.create(model="full", **prompt)  # type: ignore[call-overload]
    back = direct.completions.create(model=BACKEND_MODEL, **prompt)  # type: ignore[call-overload]
    _same_bytes(relayed.full, "completions")
    assert through.choices[0].text == "relayed word by word"
    assert _dumps([through]) == _dumps([back])

    streamed = list(oai.completions.create(model="full", stream=True, **prompt))  # type: ignore[call-overload]
    back_streamed = list(direct.completions.create(model=BACKEND_MODEL, stream=True, **prompt))  # type: ignore[call-overload]
    _same_bytes(relayed.full, "completions", usage_asked=True)
    assert "".join(c.choices[0].text for c in streamed) == "relayed word by word"
    assert _dumps(streamed) == _dumps(back_streamed)
    assert all(c.model == "full" for c in streamed)


def test_responses_plain_and_streamed(relayed: Relayed) -> None:
    oai, direct = relayed.oai(), relayed.oai(direct=True)
    request = {"input": "hello", "previous_response_id": "resp_earlier", "store": False}
    through = oai.responses.create(model="full", **request)  # type: ignore[call-overload]
    back = direct.responses.create(model=BACKEND_MODEL, **request)  # type: ignore[call-overload]
    _same_bytes(relayed.full, "responses")
    assert relayed.full.requests[-1]["previous_response_id"] == "resp_earlier"
    assert through.output_text == "relayed word by word"
    assert _dumps([through]) == _dumps([back])

    events = list(oai.responses.create(model="full", stream=True, **request))  # type: ignore[call-overload]
    back_events = list(direct.responses.create(model=BACKEND_MODEL, stream=True, **request))  # type: ignore[call-overload]
    _same_bytes(relayed.full, "responses")
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert events[-1].response.model == "full"  # type: ignore[union-attr]
    assert _dumps(events) == _dumps(back_events)


def test_anthropic_messages_plain_and_streamed(relayed: Relayed) -> None:
    claude, direct = relayed.claude(), relayed.claude(direct=True)
    request: dict[str, Any] = {"max_tokens": 64, "messages": USER, "system": "be brief"}
    through = claude.messages.create(model="full", **request)
    back = direct.messages.create(model=BACKEND_MODEL, **request)
    _same_bytes(relayed.full, "messages")
    assert through.content[0].text == "relayed word by word"  # type: ignore[union-attr]
    assert through.model == "full"
    assert _dumps([through]) == _dumps([back])

    events = list(claude.messages.create(model="full", stream=True, **request))
    back_events = list(direct.messages.create(model=BACKEND_MODEL, stream=True, **request))
    _same_bytes(relayed.full, "messages")
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    assert _dumps(events) == _dumps(back_events)
    with claude.messages.stream(model="full", **request) as stream:
        assert "".join(stream.text_stream) == "relayed word by word"


def test_an_alias_calls_its_model(relayed: Relayed) -> None:
    reply = relayed.oai().chat.completions.create(model=ALIAS, messages=USER)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "relayed word by word"
    assert reply.model == "full"  # answers name the model's own name
    assert relayed.full.requests[-1]["model"] == BACKEND_MODEL
    assert relayed.oai().embeddings.create(model="full-alias", input="x").data


def test_an_endpoint_not_served_is_refused_before_the_publisher(relayed: Relayed) -> None:
    seen = len(relayed.full.raw)
    with pytest.raises(openai.NotFoundError) as info:
        relayed.oai().embeddings.create(model="chat-only", input="x")
    assert info.value.code == "endpoint_not_served"
    assert "does not serve /v1/embeddings" in info.value.message
    with pytest.raises(anthropic.NotFoundError) as refused:
        relayed.claude().messages.create(model="chat-only", max_tokens=8, messages=USER)  # type: ignore[arg-type]
    assert refused.value.body["error"]["code"] == "endpoint_not_served"  # type: ignore[index]
    assert len(relayed.full.raw) == seen
    assert relayed.infer_tasks("chat-only") == 0  # no task: nothing reached the publisher
    relayed.oai().embeddings.create(model="full", input="x")
    # (where a task would be, once its record is written behind the answer)
    wait_until(lambda: relayed.infer_tasks("full") > 0, 30, "no task of full recorded")


def test_a_backend_that_lacks_an_endpoint(relayed: Relayed) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        relayed.oai().responses.create(model="lacking", input="hi")
    assert info.value.code == "endpoint_not_served"
    assert re.search(r"does not serve /v1/responses .*404", info.value.message)
    with pytest.raises(anthropic.NotFoundError):
        relayed.claude().messages.create(model="lacking", max_tokens=8, messages=USER)  # type: ignore[arg-type]
    assert relayed.lacking.raw[-1][0] == "messages"
    # learned: no longer offered, and refused at once, without asking the backend again
    lacking = relayed.oai().models.retrieve("lacking").model_dump()
    assert lacking["endpoints"] == ["chat", "completions", "embeddings"]
    seen = len(relayed.lacking.raw)
    with pytest.raises(openai.NotFoundError) as again:
        relayed.oai().responses.create(model="lacking", input="hi")
    assert again.value.message.endswith("the model 'lacking' does not serve /v1/responses")
    assert len(relayed.lacking.raw) == seen


def test_anthropic_errors_and_keys(relayed: Relayed) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        relayed.claude().messages.create(model="nope", max_tokens=8, messages=USER)  # type: ignore[arg-type]
    body = info.value.body
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError):
        relayed.claude(key="wrong-key").messages.create(
            model="full",
            max_tokens=8,
            messages=USER,  # type: ignore[arg-type]
        )
    # the anthropic API's own header carries the key too
    answer = httpx.post(
        f"{relayed.url}/v1/messages",
        headers={"x-api-key": DEV_CLIENT_TOKEN, "anthropic-version": "2023-06-01"},
        json={"model": "full", "max_tokens": 8, "messages": USER},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["content"][0]["text"] == "relayed word by word"


def test_tokens_stream_as_the_backend_sends_them(relayed: Relayed) -> None:
    """The first event of each stream reaches the client while the backend still has
    events to send (0.2 s apart: at least two still to come)."""
    oai = relayed.oai()
    streams: list[tuple[str, int, Any]] = [
        (
            "message_stop",
            10,
            lambda: relayed.claude().messages.create(
                model="full",
                max_tokens=8,
                messages=USER,  # type: ignore[arg-type]
                stream=True,
            ),
        ),
        (
            "response.completed",
            7,
            lambda: oai.responses.create(model="full", input="x", stream=True),
        ),
        (None, 5, lambda: oai.completions.create(model="full", prompt="x", stream=True)),
    ]
    relayed.full.interval = 0.2
    try:
        for last, total, start in streams:
            before = len(relayed.full.produced_at)
            events = iter(start())
            next(events)
            assert len(relayed.full.produced_at) - before <= total - 2, last
            rest = list(events)
            assert len(relayed.full.produced_at) - before == total
            if last is not None:
                assert rest[-1].type == last
    finally:
        relayed.full.interval = 0.01


def test_the_readme_examples_run(relayed: Relayed, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's embeddings and Anthropic messages examples, against the echo model."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Embeddings, completions, responses and Anthropic messages")[1]
    blocks = re.findall(r"```python\n(.*?)```", section.split("\n## ")[0], re.DOTALL)
    assert len(blocks) == 2
    for block in blocks:
        code = block.replace("http://127.0.0.1:8787", relayed.url)
        exec(code.replace("dev-client-token", DEV_CLIENT_TOKEN), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("2 ")  # two vectors
    assert printed[1] == "hello there"
    assert printed[2] == "token by token"


def test_echo_serves_every_api_as_the_sdks_read_them(relayed: Relayed) -> None:
    """The demo's echo model answers each API in its own shape, plain and streamed."""
    oai = relayed.oai()
    text = "say it back"
    assert oai.completions.create(model="echo", prompt=text).choices[0].text == text
    chunks = list(oai.completions.create(model="echo", prompt=text, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert oai.responses.create(model="echo", input=text).output_text == text
    events = list(oai.responses.create(model="echo", input=text, stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == text  # type: ignore[union-attr]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]  # type: ignore[union-attr]
    assert "".join(deltas) == text
    vectors = oai.embeddings.create(model="echo", input=[text, text], encoding_format="base64")
    assert len(vectors.data) == 2 and vectors.data[0].embedding == vectors.data[1].embedding
    claude = relayed.claude()
    reply = claude.messages.create(
        model="echo", max_tokens=64, messages=[{"role": "user", "content": text}]
    )
    assert reply.content[0].text == text and reply.usage.output_tokens > 0  # type: ignore[union-attr]
