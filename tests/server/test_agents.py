"""Agents an admin applies, called on a real relay (uvicorn + moto): the system prompt
and defaults reach the backend as each API says them, the request's own values win,
answers name the agent, scopes and ownership hold, and only admins manage agents."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from natrelay.wire import Paths, SessionRequest
from natrelay_infra.moto_server import MotoProcess
from tests.server.test_rows_access import key as made_key
from tests.support.net import wait_until
from tests.support.scripted import ScriptedPublisher
from tests.support.stack import Stack, running_stack

PROMPT = "You are Support Bot. Answer in one line."
AGENT = {
    "name": "support-bot",
    "target": "m",
    "systemPrompt": PROMPT,
    "defaults": {"temperature": 0.2, "max_tokens": 64, "stop": "END", "seed": 7},
    "description": "first-line support",
}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def mirror(task: dict[str, Any], pub: ScriptedPublisher) -> None:
    """Answer with the request the backend would get, as JSON text (and the model as
    the backend names it)."""
    text = json.dumps(task["request"], sort_keys=True)
    body = {
        "object": "chat.completion",
        "id": "x",
        "model": "backend-model-id",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
    }
    pub.result(task["id"], {"status": 200, "body": body})


@pytest.fixture
def agents_stack(moto_server: MotoProcess) -> Iterator[Stack]:
    with running_stack(
        moto_server.endpoint, heartbeat_timeout_seconds=5, key_cache_seconds=0
    ) as stack:
        yield stack


@pytest.fixture
def publisher(agents_stack: Stack) -> Iterator[ScriptedPublisher]:
    endpoints = ["chat", "responses", "messages"]
    providers = [{"name": "m", "type": "echo", "model": "m", "endpoints": endpoints}]
    with ScriptedPublisher(
        agents_stack.url, agents_stack.publish_token, providers, answer=mirror
    ) as pub:
        yield pub


def apply(stack: Stack, *docs: dict[str, Any], token: str | None = None) -> httpx.Response:
    return httpx.post(
        f"{stack.url}{Paths.AGENTS_APPLY}",
        headers=auth(token or stack.admin_token),
        json={"documents": list(docs)},
        timeout=30,
    )


def call(stack: Stack, path: str, body: dict[str, Any], token: str | None = None) -> httpx.Response:
    return httpx.post(
        f"{stack.url}{path}", headers=auth(token or stack.client_token), json=body, timeout=30
    )


def seen(resp: httpx.Response) -> dict[str, Any]:
    """The request the backend got, from the mirror's answer."""
    assert resp.status_code == 200, resp.text
    return dict(json.loads(resp.json()["choices"][0]["message"]["content"]))


def key(stack: Stack, role: str, **spec: Any) -> str:
    """A new key's secret."""
    return str(made_key(stack, role, **spec)["secret"])


def test_chat_gets_the_prompt_first_and_the_defaults_the_request_leaves_unset(
    agents_stack: Stack, publisher: ScriptedPublisher
) -> None:
    made = apply(agents_stack, AGENT)
    assert made.json()["data"] == [
        {"name": "support-bot", "action": "created", "changed": ["target"]}
    ]
    user = [{"role": "user", "content": "my printer is on fire"}]
    resp = call(
        agents_stack,
        Paths.CHAT,
        {"model": "support-bot", "messages": user, "temperature": 0.9, "max_tokens": None},
    )
    sent = seen(resp)
    assert sent["messages"] == [{"role": "system", "content": PROMPT}, *user]
    assert sent["temperature"] == 0.9  # the request's own value wins
    assert (sent["max_tokens"], sent["stop"], sent["seed"]) == (64, "END", 7)  # null: unset
    assert sent["model"] == "m"  # the target row, which the publisher maps to its backend
    assert resp.json()["model"] == "support-bot"  # the answer names the agent
    assert resp.headers["x-natrelay-served-by"] == "m"
    # the same request to the row itself: no prompt, no defaults
    plain = seen(call(agents_stack, Paths.CHAT, {"model": "m", "messages": user}))
    assert plain["messages"] == user and "temperature" not in plain


def test_responses_and_messages_take_the_prompt_their_own_way(
    agents_stack: Stack, publisher: ScriptedPublisher
) -> None:
    apply(agents_stack, AGENT).raise_for_status()
    sent = seen(
        call(
            agents_stack,
            Paths.RESPONSES,
            {"model": "support-bot", "input": "hello", "instructions": "Be brief."},
        )
    )
    assert sent["instructions"] == f"{PROMPT}\n\nBe brief."
    assert (sent["temperature"], sent["max_output_tokens"]) == (0.2, 64)
    assert "stop" not in sent and "seed" not in sent  # the Responses API has neither
    blocks = [{"type": "text", "text": "Be brief."}]
    messages = {
        "model": "support-bot",
        "max_tokens": 10,
        "system": blocks,
        "messages": [{"role": "user", "content": "hello"}],
    }
    sent = seen(call(agents_stack, Paths.MESSAGES, messages))
    assert sent["system"] == [{"type": "text", "text": PROMPT}, *blocks]
    assert (sent["max_tokens"], sent["stop_sequences"], sent["temperature"]) == (10, ["END"], 0.2)


def test_an_agent_answers_only_its_apis(agents_stack: Stack, publisher: ScriptedPublisher) -> None:
    apply(agents_stack, AGENT).raise_for_status()
    resp = call(agents_stack, Paths.COMPLETIONS, {"model": "support-bot", "prompt": "hi"})
    assert resp.status_code == 404, resp.text
    assert resp.json()["error"]["code"] == "endpoint_not_served"


def test_an_async_request_to_an_agent_is_queued_for_its_target(
    agents_stack: Stack, publisher: ScriptedPublisher
) -> None:
    apply(agents_stack, AGENT).raise_for_status()
    resp = httpx.post(
        f"{agents_stack.url}/api/v1/llms/support-bot/infer",
        headers={**auth(agents_stack.client_token), "Prefer": "respond-async"},
        json={"messages": [{"role": "user", "content": "later"}]},
        timeout=30,
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["llm"] == "m"
    location = f"{agents_stack.url}{resp.headers['location']}"

    def done() -> dict[str, Any] | None:
        task = httpx.get(location, headers=auth(agents_stack.client_token), timeout=10).json()
        return task if task["state"] == "completed" else None

    wait_until(lambda: done() is not None, 30)
    task = done()
    assert task is not None and task["result"]["model"] == "support-bot"
    sent = json.loads(task["result"]["choices"][0]["message"]["content"])
    assert sent["messages"][0] == {"role": "system", "content": PROMPT}


def test_scopes_apply_to_agent_names(agents_stack: Stack, publisher: ScriptedPublisher) -> None:
    apply(agents_stack, AGENT).raise_for_status()
    scoped = key(agents_stack, "client", models=["support-*"])
    other = key(agents_stack, "client", models=["m"])
    user = [{"role": "user", "content": "hi"}]
    # in scope: the agent answers, though its target is outside the key's scope
    assert seen(call(agents_stack, Paths.CHAT, {"model": "support-bot", "messages": user}, scoped))
    direct = call(agents_stack, Paths.CHAT, {"model": "m", "messages": user}, scoped)
    assert direct.status_code == 404
    # outside scope: exactly as an unknown model
    hidden = call(agents_stack, Paths.CHAT, {"model": "support-bot", "messages": user}, other)
    unknown = call(agents_stack, Paths.CHAT, {"model": "support-bof", "messages": user}, other)
    assert (hidden.status_code, unknown.status_code) == (404, 404)
    assert hidden.json()["error"]["code"] == unknown.json()["error"]["code"] == "model_not_found"
    said = hidden.json()["error"]["message"].replace("support-bot", "X")
    assert said == unknown.json()["error"]["message"].replace("support-bof", "X")
    listed = httpx.get(f"{agents_stack.url}/v1/models", headers=auth(other), timeout=10).json()
    assert [m["id"] for m in listed["data"]] == ["m"]
    listed = httpx.get(f"{agents_stack.url}/v1/models", headers=auth(scoped), timeout=10).json()
    [card] = listed["data"]
    assert card["id"] == "support-bot" and card["owned_by"] == "admin"
    assert card["natrelay"] == {"kind": "agent"}  # its target: to admins only
    admin = httpx.get(
        f"{agents_stack.url}/v1/models/support-bot", headers=auth(agents_stack.admin_token)
    ).json()
    assert admin["natrelay"] == {"kind": "agent", "target": "m"}


def test_only_admins_manage_agents(agents_stack: Stack, publisher: ScriptedPublisher) -> None:
    for token in (agents_stack.client_token, agents_stack.publish_token):
        assert apply(agents_stack, AGENT, token=token).status_code == 403
        listed = httpx.get(f"{agents_stack.url}{Paths.AGENTS}", headers=auth(token), timeout=10)
        assert listed.status_code == 403
    apply(agents_stack, AGENT).raise_for_status()
    url = f"{agents_stack.url}{Paths.AGENTS}/support-bot"
    deleted = httpx.delete(url, headers=auth(agents_stack.client_token), timeout=10)
    assert deleted.status_code == 403
    got = httpx.get(url, headers=auth(agents_stack.admin_token), timeout=10).json()
    assert got["target"] == "m" and got["systemPrompt"] == PROMPT and got["status"] == "active"
    assert got["owner"] == "admin:agent" and got["origin"] == "admin"
    # what get shows applies back unchanged
    assert apply(agents_stack, got).json()["data"][0]["action"] == "unchanged"
    assert httpx.delete(url, headers=auth(agents_stack.admin_token), timeout=10).status_code == 204
    assert httpx.get(url, headers=auth(agents_stack.admin_token), timeout=10).status_code == 404


def test_names_are_owned(agents_stack: Stack, publisher: ScriptedPublisher) -> None:
    # the publisher's row name
    taken = apply(agents_stack, {**AGENT, "name": "m", "target": "support-bot"})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "name_owned"
    apply(agents_stack, AGENT).raise_for_status()
    # a publisher cannot publish a row under an admin's agent's name
    other = ScriptedPublisher(
        agents_stack.url,
        agents_stack.publish_token,
        [{"name": "support-bot", "type": "echo", "model": "m"}],
    )
    try:
        resp = other.post("_provider-register", {"providers": other.providers})
        assert resp.status_code == 409 and resp.json()["error"]["code"] == "name_owned"
    finally:
        other.http.close()


def test_an_agent_whose_target_is_gone_is_offline(agents_stack: Stack) -> None:
    # a publisher that registers and never polls (so none polls after it leaves)
    quiet = ScriptedPublisher(
        agents_stack.url, agents_stack.publish_token, [{"name": "m", "type": "echo", "model": "m"}]
    )
    session = quiet.register()
    try:
        apply(agents_stack, AGENT, {**AGENT, "name": "nowhere", "target": "absent"})
        user = [{"role": "user", "content": "hi"}]
        resp = call(agents_stack, Paths.CHAT, {"model": "nowhere", "messages": user})
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "publisher_offline"
        quiet.send(Paths.DEREGISTER, SessionRequest(provider_session_id=session))
        resp = call(agents_stack, Paths.CHAT, {"model": "support-bot", "messages": user})
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "publisher_offline"
        said = resp.json()["error"]["message"]
        assert (
            said == "the agent 'support-bot' cannot answer now (publisher_offline); try again later"
        )
        assert "'m'" not in said  # its target is shown to admins only
        resp = call(
            agents_stack,
            Paths.CHAT,
            {"model": "support-bot", "messages": user},
            token=agents_stack.admin_token,
        )
        assert resp.status_code == 503 and "the publisher of 'm' is offline" in resp.text
    finally:
        quiet.http.close()


def signed(label: str) -> Any:
    """An answer saying which publisher gave it."""

    def answer(task: dict[str, Any], pub: ScriptedPublisher) -> None:
        body = {
            "object": "chat.completion",
            "model": "x",
            "choices": [{"message": {"content": label}}],
        }
        pub.result(task["id"], {"status": 200, "body": body})

    return answer


def test_a_pool_by_model_spans_keys_only_where_an_admin_allowed_it(agents_stack: Stack) -> None:
    keys = [key(agents_stack, "publisher") for _ in range(2)]
    llama = {"type": "openai", "model": "llama3.1:8b"}
    team = {"name": "team-bot", "target": {"model": "llama3.1:8b"}, "systemPrompt": "Team."}
    first = ScriptedPublisher(
        agents_stack.url, keys[0], [{"name": "a-llama", **llama}], signed("a"), agents=[team]
    )
    second = ScriptedPublisher(
        agents_stack.url, keys[1], [{"name": "b-llama", **llama}], signed("b")
    )

    def twenty() -> list[tuple[str, str]]:
        with httpx.Client(timeout=60, headers=auth(agents_stack.client_token)) as http:
            body = {"model": "team-bot", "messages": [{"role": "user", "content": "hi"}]}
            with ThreadPoolExecutor(20) as pool:
                answers = list(
                    pool.map(
                        lambda _: http.post(f"{agents_stack.url}{Paths.CHAT}", json=body), range(20)
                    )
                )
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        return [
            (a.json()["choices"][0]["message"]["content"], a.headers["x-natrelay-served-by"])
            for a in answers
        ]

    with first, second:
        # without an admin's allowance: the agent's own key's rows only
        assert set(twenty()) == {("a", "a-llama")}
        shared = httpx.post(
            f"{agents_stack.url}{Paths.LLMS_APPLY}",
            headers=auth(agents_stack.admin_token),
            json={"documents": [{"name": "b-llama", "sharedPool": True}]},
            timeout=30,
        )
        assert shared.json()["data"][0]["changed"] == ["sharedPool"], shared.text
        served = twenty()
    assert set(served) == {("a", "a-llama"), ("b", "b-llama")}
    counts = {label: sum(1 for s, _ in served if s == label) for label in ("a", "b")}
    assert counts["a"] + counts["b"] == 20 and min(counts.values()) >= 5, counts


def test_the_console_shows_agents_with_their_target_state_and_requests(
    agents_stack: Stack, publisher: ScriptedPublisher
) -> None:
    apply(agents_stack, AGENT, {**AGENT, "name": "nowhere", "target": "absent"}).raise_for_status()
    user = [{"role": "user", "content": "hi"}]
    for _ in range(2):
        seen(call(agents_stack, Paths.CHAT, {"model": "support-bot", "messages": user}))
    logged = httpx.post(
        f"{agents_stack.url}{Paths.CONSOLE_LOGIN}",
        data={"key": agents_stack.admin_token},
        follow_redirects=False,
        timeout=10,
    )
    cookie = {"Cookie": f"natrelay_console={logged.cookies['natrelay_console']}"}

    def agents_on_page() -> tuple[str, list[str], str]:
        page = httpx.get(f"{agents_stack.url}{Paths.CONSOLE}", headers=cookie, timeout=10).text
        bot = re.search(r'<tr id="agent-support-bot">(.*?)</tr>', page)
        gone = re.search(r'<tr id="agent-nowhere">(.*?)</tr>', page)
        assert bot is not None and gone is not None, page
        return page, re.findall(r"<td[^>]*>(.*?)</td>", bot[1]), gone[1]

    # a request's count is written behind its answer: wait for the page to show both
    wait_until(lambda: agents_on_page()[1][-2] == "2", 30)
    page, cells, gone = agents_on_page()
    assert cells[1:] == ["admin", "m", '<span class="active">active</span>', "2", "0"]
    assert '<span class="inactive">inactive</span>' in gone
    assert PROMPT not in page  # the system prompt is the agent's, not the page's
    assert 'id="row-support-bot"' not in page  # an agent is no row


def test_an_idempotency_key_s_retry_finds_its_task_in_a_pool_by_model(
    agents_stack: Stack,
) -> None:
    llama = {"type": "openai", "model": "llama3.1:8b"}
    rows = ("a-llama", "b-llama", "c-llama")
    pubs = [
        ScriptedPublisher(
            agents_stack.url, agents_stack.publish_token, [{"name": n, **llama}], signed(n)
        )
        for n in rows
    ]
    apply(agents_stack, {"name": "any-llama", "target": {"model": "llama3.1:8b"}})
    body = {"model": "any-llama", "messages": [{"role": "user", "content": "once"}]}
    with pubs[0], pubs[1], pubs[2]:
        served = set()
        for i in range(6):
            headers = {**auth(agents_stack.client_token), "Idempotency-Key": f"key-{i}"}
            first, again = (
                httpx.post(
                    f"{agents_stack.url}{Paths.CHAT}", headers=headers, json=body, timeout=30
                )
                for _ in range(2)
            )
            assert first.status_code == again.status_code == 200, (first.text, again.text)
            assert first.json() == again.json()  # the same task's answer, not a second run
            assert first.headers["x-natrelay-served-by"] == again.headers["x-natrelay-served-by"]
            served.add(first.headers["x-natrelay-served-by"])
    assert sum(len(p.seen) for p in pubs) == 6  # each key ran once
    assert len(served) > 1  # different keys, different turns


def test_a_published_agent_is_offline_once_its_publisher_leaves(agents_stack: Stack) -> None:
    own = {"name": "own-bot", "target": "m", "systemPrompt": "Mine."}
    quiet = ScriptedPublisher(
        agents_stack.url,
        agents_stack.publish_token,
        [{"name": "m", "type": "echo", "model": "m"}],
        agents=[own],
    )
    session = quiet.register()
    try:
        listed = httpx.get(
            f"{agents_stack.url}/v1/models", headers=auth(agents_stack.client_token), timeout=10
        ).json()
        [card] = [m for m in listed["data"] if m["id"] == "own-bot"]
        assert card["owned_by"] == "publisher"
        quiet.send(Paths.DEREGISTER, SessionRequest(provider_session_id=session))
        user = [{"role": "user", "content": "hi"}]
        resp = call(agents_stack, Paths.CHAT, {"model": "own-bot", "messages": user})
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "publisher_offline"
        got = httpx.get(
            f"{agents_stack.url}{Paths.AGENTS}/own-bot",
            headers=auth(agents_stack.admin_token),
            timeout=10,
        ).json()
        assert (got["origin"], got["status"]) == ("published", "inactive")
    finally:
        quiet.http.close()


def test_an_agent_is_no_row_to_the_rows_api(agents_stack: Stack) -> None:
    apply(agents_stack, AGENT).raise_for_status()
    headers = auth(agents_stack.admin_token)
    got = httpx.get(f"{agents_stack.url}{Paths.LLMS}/support-bot", headers=headers, timeout=10)
    assert got.status_code == 404 and "is an agent, not a row" in got.text
    listed = httpx.get(f"{agents_stack.url}{Paths.LLMS}", headers=headers, timeout=10).json()
    assert "support-bot" not in [r["name"] for r in listed["data"]]
    refused = httpx.post(
        f"{agents_stack.url}{Paths.LLMS_APPLY}",
        headers=headers,
        json={"documents": [{"name": "support-bot", "tier": "gold"}]},
        timeout=10,
    )
    assert refused.status_code == 400 and "natrelay agent apply" in refused.text
