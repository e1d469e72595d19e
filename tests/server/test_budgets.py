"""Token budgets that hold, on a real relay (uvicorn + moto): every stream is counted,
admission reserves what a request may use, and a publisher cannot charge a client more
than its request allows."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from tests.server.test_keys import ECHO, MSG, auth, chat, create_key, error_of
from tests.support.net import wait_until
from tests.support.scripted import ScriptedPublisher
from tests.support.stack import Stack

USAGE = {"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38}


def _chunk(text: str) -> dict[str, Any]:
    choice = {"index": 0, "delta": {"content": text}}
    return {"object": "chat.completion.chunk", "choices": [choice]}


def _backend_like(usage: dict[str, Any] | None = USAGE) -> Any:
    """Answers as a real backend does: a stream's usage only when the request asks for it
    (stream_options.include_usage); `usage` None: never any usage (an old publisher)."""

    def answer(task: dict[str, Any], pub: ScriptedPublisher) -> None:
        request = task["request"]
        if task["stream"]:
            asked = (request.get("stream_options") or {}).get("include_usage")
            chunks = [_chunk("one "), _chunk("two "), _chunk("three")]
            if asked and usage:
                chunks.append({"object": "chat.completion.chunk", "choices": [], "usage": usage})
            pub.chunk(task["id"], 0, chunks)
            body = {"usage": usage} if asked and usage else None
            pub.result(task["id"], {"status": 200, "body": body, "chunkCount": 1})
            return
        message = {"role": "assistant", "content": "one two three"}
        body = {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}
        pub.result(task["id"], {"status": 200, "body": {**body, "usage": usage} if usage else body})

    return answer


def _today(stack: Stack, secret: str) -> dict[str, Any]:
    days = httpx.get(f"{stack.url}/api/v1/usage", headers=auth(secret), timeout=10).json()["days"]
    return dict(days[-1]) if days else {}


def _stream_events(stack: Stack, secret: str, **extra: Any) -> list[str]:
    resp = chat(stack, secret, stream=True, **extra)
    assert resp.status_code == 200, resp.text
    return [line for line in resp.text.splitlines() if line.startswith("data: ")]


def test_a_stream_is_counted_though_the_client_did_not_ask_for_usage(keyed: Stack) -> None:
    pub = create_key(keyed, role="publisher", label="p")["secret"]
    key = create_key(keyed, role="client", label="streams")
    with ScriptedPublisher(keyed.url, pub, ECHO, answer=_backend_like()) as publisher:
        events = _stream_events(keyed, key["secret"])
        # the relay asked the backend for its usage, and kept it from the client
        assert publisher.seen[-1]["request"]["stream_options"] == {"include_usage": True}
        assert not [e for e in events if '"usage"' in e], events
        assert events[-1] == "data: [DONE]"
        # a client that asks gets it, as before
        asked = _stream_events(keyed, key["secret"], stream_options={"include_usage": True})
        assert any('"usage"' in e for e in asked)
    wait_until(lambda: _today(keyed, key["secret"]).get("requests") == 2, 10)
    today = _today(keyed, key["secret"])
    assert (today["promptTokens"], today["completionTokens"]) == (60, 16)


def test_a_stream_without_any_usage_is_counted_from_what_was_relayed(keyed: Stack) -> None:
    pub = create_key(keyed, role="publisher", label="p")["secret"]
    key = create_key(keyed, role="client", label="mute")
    with ScriptedPublisher(keyed.url, pub, ECHO, answer=_backend_like(usage=None)):
        _stream_events(keyed, key["secret"])
        assert chat(keyed, key["secret"]).status_code == 200
    wait_until(lambda: _today(keyed, key["secret"]).get("requests") == 2, 10)
    today = _today(keyed, key["secret"])
    # "one two three" is 13 bytes of text: about 4 tokens, each time; the prompt too
    assert today["completionTokens"] == 2 * 4
    assert today["promptTokens"] > 0


def test_admission_reserves_what_a_request_may_use(keyed: Stack) -> None:
    """10 requests at once for a 50-token budget: before any answer, only those whose
    reservations fit in are let in (not all 10)."""
    pub = create_key(keyed, role="publisher", label="p")["secret"]
    budget = create_key(keyed, role="client", label="budget", tokens_per_day=50)["secret"]
    release = threading.Event()
    answer = _backend_like()

    def held(task: dict[str, Any], publisher: ScriptedPublisher) -> None:
        release.wait(30)
        answer(task, publisher)

    answers: list[httpx.Response] = []
    with ScriptedPublisher(keyed.url, pub, ECHO, answer=held):
        threads = [
            threading.Thread(target=lambda: answers.append(chat(keyed, budget, max_tokens=8)))
            for _ in range(10)
        ]
        for t in threads:
            t.start()
        wait_until(lambda: sum(r.status_code == 429 for r in answers) >= 8, 20)
        release.set()
        for t in threads:
            t.join(30)
        admitted = [r for r in answers if r.status_code == 200]
        refused = [r for r in answers if r.status_code == 429]
        assert 1 <= len(admitted) <= 2 and len(refused) == 10 - len(admitted), answers
        assert "reserved" in refused[0].json()["error"]["message"]
        assert refused[0].headers.get("x-should-retry") != "false"  # it frees up soon
        # settled with the real counts: 38 each, the budget of 50 is used up now
        wait_until(lambda: _today(keyed, budget).get("requests") == len(admitted), 10)
        error_of(chat(keyed, budget, max_tokens=8), 429, "budget_exceeded")
    today = _today(keyed, budget)
    assert today["promptTokens"] + today["completionTokens"] == 38 * len(admitted)


def test_a_publisher_cannot_charge_more_than_the_request_allows(keyed: Stack) -> None:
    pub = create_key(keyed, role="publisher", label="p")["secret"]
    key = create_key(keyed, role="client", label="victim", tokens_per_day=100_000)["secret"]
    absurd = {"prompt_tokens": 10**12, "completion_tokens": 10**12, "total_tokens": 2 * 10**12}
    with ScriptedPublisher(keyed.url, pub, ECHO, answer=_backend_like(absurd)):
        assert chat(keyed, key, max_tokens=16).status_code == 200
        events = _stream_events(keyed, key)  # no max_tokens: bounded by what was relayed
        assert events[-1] == "data: [DONE]"
        wait_until(lambda: _today(keyed, key).get("requests") == 2, 10)
        today = _today(keyed, key)
        assert today["promptTokens"] <= 2 * (len(str(MSG)) + 400)
        assert today["completionTokens"] <= 16 + 13 + 64
        # the client is not locked out: its budget holds what it really used
        assert chat(keyed, key, max_tokens=16).status_code == 200
