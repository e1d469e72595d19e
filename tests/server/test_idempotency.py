"""Requests the official SDK retries: `x-should-retry: false` where a retry cannot help,
and `Idempotency-Key` so that a retry returns the first task's answer."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import anyio
import httpx
import openai
import pytest

from natrelay.errors import InvalidRequestError
from natrelay.service import Principal, Relay
from natrelay.service.assembly import build_relay
from natrelay.settings import Settings
from natrelay.wire import Role, TaskResult
from natrelay_infra.moto_server import MotoProcess
from tests.server.conftest import CHAT, CLIENT, PUB, FakeClock, OpCounter, claim, register, spec
from tests.support.scripted import ScriptedPublisher, echo_answer
from tests.support.stack import FAKE_AWS, fresh_tables, running_stack

ECHO = [{"name": "echo", "type": "echo", "model": "echo"}]
MSG = [{"role": "user", "content": "the quick brown fox"}]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the service ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_same_key_from_the_same_client_is_one_task(
    relay: Relay, client: Any, clock: FakeClock
) -> None:
    sid = await register(relay, spec("a"))
    first, replayed = await relay.queue.submit_once(CLIENT, "a", CHAT, stream=False, key="k1")
    assert not replayed
    counter = OpCounter(client)
    again, replayed = await relay.queue.submit_once(CLIENT, "a", CHAT, stream=False, key="k1")
    assert replayed and again.id == first.id
    assert counter.ops == ["GetItem", "GetItem"]  # the key's record, then its task
    other = Principal(key_id="client-b", role=Role.CLIENT)
    theirs, replayed = await relay.queue.submit_once(other, "a", CHAT, stream=False, key="k1")
    assert not replayed and theirs.id != first.id
    assert sorted(t.id for t in await claim(relay, sid)) == sorted([first.id, theirs.id])
    with pytest.raises(InvalidRequestError) as info:
        body = {**CHAT, "messages": [{"role": "user", "content": "something else"}]}
        await relay.queue.submit_once(CLIENT, "a", body, stream=False, key="k1")
    assert info.value.param == "Idempotency-Key"
    await relay.claims.post_result(PUB, first.id, TaskResult(provider_session_id=sid, body={}))
    # past the result retention the key starts a new task
    clock.advance(relay.settings.max_task_seconds + relay.settings.result_retention_seconds + 1)
    await register(relay, spec("a"), session=sid)
    later, replayed = await relay.queue.submit_once(CLIENT, "a", CHAT, stream=False, key="k1")
    assert not replayed and later.id != first.id


def test_concurrent_requests_with_one_key_make_one_task(moto_server: MotoProcess) -> None:
    """Against the serialized moto server: in-process moto checks conditions without a
    lock, so a race there would prove nothing (DESIGN.md)."""
    os.environ.update(FAKE_AWS)
    tables = fresh_tables(moto_server.endpoint)
    settings = Settings(
        dynamodb_endpoint=moto_server.endpoint,
        llms_table=tables.llms,
        tasks_table=tables.tasks,
        keys_table=tables.keys,
        mode="lambda",
    )
    relay = build_relay(settings)

    async def run() -> tuple[list[str], list[str]]:
        sid = await register(relay, spec("a"))
        got: list[str] = []

        async def one() -> None:
            task, _ = await relay.queue.submit_once(CLIENT, "a", CHAT, stream=False, key="burst")
            got.append(task.id)

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(one)
        return got, [t.id for t in await claim(relay, sid)]

    got, polled = anyio.run(run)
    assert len(set(got)) == 1 and polled == got[:1]


# --- the official SDK on a real relay ----------------------------------------------------


def test_the_sdk_does_not_rerun_a_task_that_timed_out(moto_server: MotoProcess) -> None:
    with running_stack(moto_server.endpoint, request_timeout_seconds=1) as stack:
        held: list[dict[str, Any]] = []
        with ScriptedPublisher(
            stack.url, stack.publish_token, ECHO, answer=lambda task, pub: held.append(task)
        ):
            oai = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.client_token)
            with pytest.raises(openai.APIStatusError) as info:
                oai.chat.completions.create(model="echo", messages=MSG)  # type: ignore[arg-type]
            assert info.value.status_code == 504
            assert info.value.response.headers["x-should-retry"] == "false"
            time.sleep(1.0)
        assert len(held) == 1, "the SDK's retries ran the task again"


def test_an_offline_model_fails_at_once_for_the_sdk(moto_server: MotoProcess) -> None:
    with running_stack(moto_server.endpoint) as stack:
        pub = ScriptedPublisher(stack.url, stack.publish_token, ECHO)
        sid = pub.register()
        pub.post("_provider-deregister", {"providerSessionId": sid}).raise_for_status()
        pub.http.close()
        oai = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.client_token)
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as info:
            oai.chat.completions.create(model="echo", messages=MSG)  # type: ignore[arg-type]
        assert info.value.status_code == 503
        assert time.monotonic() - started < 5, "Retry-After was honoured: the SDK retried"


def test_a_spent_budget_says_do_not_retry(moto_server: MotoProcess) -> None:
    def with_usage(task: dict[str, Any], pub: ScriptedPublisher) -> None:
        body = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
        pub.result(task["id"], {"status": 200, "body": body})

    with running_stack(moto_server.endpoint, key_cache_seconds=0) as stack:
        created = httpx.post(
            f"{stack.url}/api/v1/keys",
            headers=auth(stack.admin_token),
            json={"role": "client", "label": "thrifty", "tokensPerDay": 5},
        ).json()
        with ScriptedPublisher(stack.url, stack.publish_token, ECHO, answer=with_usage):
            chat = {"model": "echo", "messages": MSG}
            url = f"{stack.url}/v1/chat/completions"
            assert httpx.post(url, headers=auth(created["secret"]), json=chat).status_code == 200
            resp = httpx.post(url, headers=auth(created["secret"]), json=chat)
        assert resp.status_code == 429 and resp.json()["error"]["code"] == "budget_exceeded"
        assert resp.headers["x-should-retry"] == "false"


def test_an_idempotency_key_returns_the_first_tasks_answer(moto_server: MotoProcess) -> None:
    with running_stack(moto_server.endpoint, request_timeout_seconds=1) as stack:
        seen: list[dict[str, Any]] = []
        release = threading.Event()

        def slow(task: dict[str, Any], pub: ScriptedPublisher) -> None:
            seen.append(task)
            release.wait(timeout=20)
            echo_answer(task, pub)

        with ScriptedPublisher(stack.url, stack.publish_token, ECHO, answer=slow):
            oai = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.client_token)
            once = {"Idempotency-Key": "order-42"}
            with pytest.raises(openai.APIStatusError):
                oai.chat.completions.create(model="echo", messages=MSG, extra_headers=once)  # type: ignore[arg-type]
            release.set()
            reply = oai.chat.completions.create(model="echo", messages=MSG, extra_headers=once)  # type: ignore[arg-type]
            assert reply.choices[0].message.content == "the quick brown fox"
            # a stream, then the same request again: the second reads the first's chunks
            twice = {"Idempotency-Key": "order-43"}
            texts = [
                "".join(
                    c.choices[0].delta.content or ""
                    for c in oai.chat.completions.create(
                        model="echo",
                        messages=MSG,  # type: ignore[arg-type]
                        stream=True,
                        extra_headers=twice,
                    )
                    if c.choices
                )
                for _ in range(2)
            ]
            assert texts == ["the quick brown fox"] * 2
            resp = httpx.post(
                f"{stack.url}/v1/chat/completions",
                headers={**auth(stack.client_token), "Idempotency-Key": "x" * 300},
                json={"model": "echo", "messages": MSG},
            )
            assert resp.status_code == 400 and resp.json()["error"]["param"] == "Idempotency-Key"
        assert len(seen) == 2, "a request with a known Idempotency-Key ran again"
