"""An agent published by a real publisher, through `natrelay dev`, with the official
`openai` and `anthropic` SDKs: its answer is the backend's answer to the same request
with the system prompt first and the defaults applied (plain and streamed); the
request's own values win; the answer names the agent.

Each call is made twice: to the agent through the relay, and straight to the backend
with the prompt and defaults written in by hand. The backend must have seen the same
request (as JSON), and the SDK must have parsed the same answer (but the model name).
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import anthropic
import openai
import pytest

from natrelay_infra.dev import DEV_CLIENT_TOKEN, DEV_PUBLISH_TOKEN
from tests.e2e.test_endpoints import _dumps
from tests.infra.test_dev import Dev, natrelay_dev
from tests.publisher.running import start_publisher, wait_rows
from tests.support.backend import FakeBackend
from tests.support.net import serve, wait_until

BACKEND_MODEL = "org/backend-model"
PROMPT = "You are the relay's helper. Answer briefly."
DEFAULTS = {"temperature": 0, "seed": 42, "max_tokens": 64}
USER = [{"role": "user", "content": "hello agent"}]


class Relayed:
    def __init__(self, dev: Dev, backend: FakeBackend, backend_url: str) -> None:
        self.dev, self.backend, self.backend_url = dev, backend, backend_url

    def oai(self, direct: bool = False) -> openai.OpenAI:
        base = f"{self.backend_url}/v1" if direct else f"{self.dev.url}/v1"
        return openai.OpenAI(base_url=base, api_key=DEV_CLIENT_TOKEN, max_retries=0, timeout=30)

    def claude(self, direct: bool = False) -> anthropic.Anthropic:
        base = self.backend_url if direct else self.dev.url
        return anthropic.Anthropic(base_url=base, api_key=DEV_CLIENT_TOKEN, max_retries=0)

    def last_two(self, endpoint: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The backend's last two requests of `endpoint` (chat: None), parsed."""
        if endpoint is None:
            first, second = self.backend.requests[-2:]
            return first, second
        (a, first_raw), (b, second_raw) = self.backend.raw[-2:]
        assert a == b == endpoint
        return json.loads(first_raw), json.loads(second_raw)


@pytest.fixture(scope="module")
def relayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relayed]:
    tmp = tmp_path_factory.mktemp("agents")
    backend = FakeBackend(reply="the helper speaks", interval=0.01)
    (tmp / "helper.md").write_text(PROMPT, encoding="utf-8")
    with ExitStack() as stack:
        url = stack.enter_context(serve(backend.app()))
        dev = stack.enter_context(natrelay_dev(tmp, "--heartbeat-timeout", "10"))
        dev.wait_for(r"^Ctrl-C stops everything")
        config = {
            "relay": {
                "url": dev.url,
                "token": DEV_PUBLISH_TOKEN,
                "sessionFile": str(tmp / "state" / "session.json"),
                "heartbeatSeconds": 1,
                "pollWaitSeconds": 5,
            },
            "providers": [
                {"name": "full", "type": "openai", "model": BACKEND_MODEL, "baseUrl": f"{url}/v1"}
            ],
            "agents": [
                {
                    "name": "helper",
                    "target": "full",
                    "systemPrompt": {"file": "helper.md"},
                    "defaults": DEFAULTS,
                    "description": "answers briefly",
                }
            ],
        }
        publisher = start_publisher(config, tmp)
        stack.callback(publisher.stop)
        target = types.SimpleNamespace(url=dev.url, client_token=DEV_CLIENT_TOKEN)
        wait_rows(target, {"full": "active"})  # type: ignore[arg-type]
        yield Relayed(dev, backend, url)


def _same_request(through: dict[str, Any], direct: dict[str, Any]) -> None:
    """One request but for the relay's own additions (a stream asked for its usage)."""
    through = {k: v for k, v in through.items() if k != "stream_options"}
    direct = {k: v for k, v in direct.items() if k != "stream_options"}
    assert through == direct


def test_the_agent_is_listed_with_its_target_for_admins_only(relayed: Relayed) -> None:
    def listed() -> dict[str, Any] | None:
        models = {m.id: m.model_dump() for m in relayed.oai().models.list()}
        return models.get("helper")

    wait_until(lambda: listed() is not None, 20)
    card = listed()
    assert card is not None
    assert card["owned_by"] == "publisher" and card["natrelay"] == {"kind": "agent"}
    assert card["description"] == "answers briefly"
    assert card["endpoints"] == ["chat", "responses", "messages"]


def test_chat_plain_and_streamed_is_the_backend_s_answer_to_the_dressed_request(
    relayed: Relayed,
) -> None:
    oai, direct = relayed.oai(), relayed.oai(direct=True)
    dressed: list[Any] = [{"role": "system", "content": PROMPT}, *USER]
    through = oai.chat.completions.create(model="helper", messages=USER)  # type: ignore[arg-type]
    back = direct.chat.completions.create(model=BACKEND_MODEL, messages=dressed, **DEFAULTS)  # type: ignore[call-overload]
    _same_request(*relayed.last_two())
    assert through.model == "helper"
    assert _dumps([through]) == _dumps([back])

    streamed = list(oai.chat.completions.create(model="helper", messages=USER, stream=True))  # type: ignore[arg-type]
    back_streamed = list(
        direct.chat.completions.create(  # type: ignore[call-overload]
            model=BACKEND_MODEL, messages=dressed, stream=True, **DEFAULTS
        )
    )
    _same_request(*relayed.last_two())
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == (
        "the helper speaks"
    )
    assert all(c.model == "helper" for c in streamed)
    assert _dumps(streamed) == _dumps(back_streamed)


def test_a_request_s_own_values_win_over_the_defaults(relayed: Relayed) -> None:
    raw = relayed.oai().chat.completions.with_raw_response.create(
        model="helper",
        messages=USER,  # type: ignore[arg-type]
        temperature=0.7,
        seed=1,
    )
    assert raw.headers["x-natrelay-served-by"] == "full"
    sent = relayed.backend.requests[-1]
    assert (sent["temperature"], sent["seed"], sent["max_tokens"]) == (0.7, 1, 64)
    assert sent["messages"][0] == {"role": "system", "content": PROMPT}


def test_responses_take_the_prompt_as_instructions(relayed: Relayed) -> None:
    oai, direct = relayed.oai(), relayed.oai(direct=True)
    through = oai.responses.create(model="helper", input="hello", instructions="Be nice.")
    back = direct.responses.create(
        model=BACKEND_MODEL,
        input="hello",
        instructions=f"{PROMPT}\n\nBe nice.",
        temperature=0,
        max_output_tokens=64,
    )
    _same_request(*relayed.last_two("responses"))
    assert through.model == "helper" and through.output_text == "the helper speaks"
    assert _dumps([through]) == _dumps([back])


def test_anthropic_messages_take_the_prompt_as_system(relayed: Relayed) -> None:
    claude, direct = relayed.claude(), relayed.claude(direct=True)
    request: dict[str, Any] = {"max_tokens": 32, "messages": USER, "system": "Be nice."}
    through = claude.messages.create(model="helper", **request)
    back = direct.messages.create(
        model=BACKEND_MODEL,
        max_tokens=32,
        messages=USER,  # type: ignore[arg-type]
        system=f"{PROMPT}\n\nBe nice.",
        extra_body={"temperature": 0},  # (this SDK's create does not name it)
    )
    _same_request(*relayed.last_two("messages"))
    assert through.model == "helper"
    assert _dumps([through]) == _dumps([back])

    events = list(claude.messages.create(model="helper", stream=True, **request))
    back_events = list(
        direct.messages.create(
            model=BACKEND_MODEL,
            max_tokens=32,
            messages=USER,  # type: ignore[arg-type]
            system=f"{PROMPT}\n\nBe nice.",
            extra_body={"temperature": 0},
            stream=True,
        )
    )
    _same_request(*relayed.last_two("messages"))
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    assert _dumps(events) == _dumps(back_events)
