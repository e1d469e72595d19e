"""Stored keys on a real relay (uvicorn + moto): roles, publisher identity, client
scope, limits counted across processes, revocation, usage."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest

from natrelay_infra.moto_server import MotoProcess
from tests.support.backend import FakeBackend
from tests.support.net import serve, wait_until
from tests.support.scripted import ScriptedPublisher
from tests.support.stack import Server, Stack, running_stack, start_api

ECHO = [{"name": "echo", "type": "echo", "model": "echo"}]
MSG = [{"role": "user", "content": "count my tokens"}]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_key(stack: Stack, **spec: Any) -> dict[str, Any]:
    resp = httpx.post(f"{stack.url}/api/v1/keys", headers=auth(stack.admin_token), json=spec)
    assert resp.status_code == 201, resp.text
    key: dict[str, Any] = resp.json()
    assert key["secret"].startswith(f"nrk_{key['id']}_")
    return key


def error_of(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["code"] == code, error
    return error


def chat(stack: Stack, token: str, model: str = "echo", **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/chat/completions",
        headers=auth(token),
        json={"model": model, "messages": MSG, **extra},
        timeout=30,
    )


def test_admin_manages_keys_and_the_secret_is_shown_once(keyed: Stack) -> None:
    admin = auth(keyed.admin_token)
    key = create_key(keyed, role="client", label="alice", models=["echo", "llama-*"], rpm=5)
    listed = httpx.get(f"{keyed.url}/api/v1/keys", headers=admin).json()["data"]
    assert [k["id"] for k in listed] == [key["id"]]
    assert all("secret" not in k and "secretHash" not in k for k in listed)
    got = httpx.get(f"{keyed.url}/api/v1/keys/{key['id']}", headers=admin).json()
    assert got["models"] == ["echo", "llama-*"] and got["status"] == "active"
    assert "secret" not in got
    revoked = httpx.delete(f"{keyed.url}/api/v1/keys/{key['id']}", headers=admin).json()
    assert revoked["status"] == "revoked" and revoked["revokedAt"]
    error_of(
        httpx.delete(f"{keyed.url}/api/v1/keys/nosuchkey", headers=admin), 404, "key_not_found"
    )


@pytest.mark.parametrize(
    ("spec", "param"),
    [
        ({"role": "boss", "label": "x"}, "role"),
        ({"role": "client", "label": "x", "models": ["bad glob!"]}, "models.0"),
        ({"role": "client", "label": "x", "rpm": 0}, "rpm"),
        ({"role": "client"}, "label"),
    ],
)
def test_bad_key_specs_name_the_field(
    shared_stack: Stack, spec: dict[str, Any], param: str
) -> None:
    resp = httpx.post(
        f"{shared_stack.url}/api/v1/keys", headers=auth(shared_stack.admin_token), json=spec
    )
    assert error_of(resp, 400, "invalid_request")["param"] == param


def test_roles_are_kept_apart(keyed: Stack) -> None:
    client = create_key(keyed, role="client", label="c")["secret"]
    publisher = create_key(keyed, role="publisher", label="p")["secret"]
    for token in (client, publisher):
        for method, path in (("GET", "/api/v1/keys"), ("POST", "/api/v1/keys")):
            resp = httpx.request(method, f"{keyed.url}{path}", headers=auth(token), json={})
            error_of(resp, 403, "forbidden")
        error_of(
            httpx.delete(f"{keyed.url}/api/v1/llms/echo", headers=auth(token)), 403, "forbidden"
        )
    error_of(httpx.get(f"{keyed.url}/v1/models", headers=auth(publisher)), 403, "forbidden")
    resp = httpx.post(
        f"{keyed.url}/api/v1/llms/_provider-register",
        headers=auth(client),
        json={"providers": ECHO},
    )
    error_of(resp, 403, "forbidden")


def test_another_publisher_key_cannot_use_a_session_id(keyed: Stack) -> None:
    key_a = create_key(keyed, role="publisher", label="box a")["secret"]
    key_b = create_key(keyed, role="publisher", label="box b")["secret"]
    client = create_key(keyed, role="client", label="c")["secret"]
    a = ScriptedPublisher(keyed.url, key_a, ECHO)
    sid = a.register()
    # a client's request is queued for A and claimed by A
    resp: dict[str, httpx.Response] = {}
    t = threading.Thread(target=lambda: resp.setdefault("r", chat(keyed, client, stream=True)))
    t.start()
    tasks: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while not tasks and time.monotonic() < deadline:
        tasks = a.poll_once(wait=1)
    task_id = tasks[0]["id"]
    b = ScriptedPublisher(keyed.url, key_b, ECHO)
    b.session_id = sid  # B holds A's session id, and nothing else
    for path, body in (
        ("_provider-poll", {"providerSessionId": sid, "waitSeconds": 0}),
        ("_provider-heartbeat", {"providerSessionId": sid}),
        ("_provider-deregister", {"providerSessionId": sid}),
    ):
        error_of(b.post(path, body), 403, "session_forbidden")
    stolen = b.chunk(task_id, 0, [{"choices": [{"index": 0, "delta": {"content": "FORGED"}}]}])
    error_of(stolen, 409, "task_not_claimed")
    forged = b.result(task_id, {"status": 200, "body": {"forged": True}})
    error_of(forged, 409, "task_not_claimed")
    request = b.http.get(
        f"/api/v1/llms/_provider-task/{task_id}/request", params={"providerSessionId": sid}
    )
    error_of(request, 403, "forbidden")
    # the same answers as for a session and a task that do not exist at all
    error_of(
        b.post("_provider-heartbeat", {"providerSessionId": "no-such-session-0"}),
        403,
        "session_forbidden",
    )
    error_of(b.result("00000000000000000000", {"status": 200}), 409, "task_not_claimed")
    # A is untouched: it still answers its task
    assert a.chunk(task_id, 0, [{"choices": [{"index": 0, "delta": {"content": "ok"}}]}]).is_success
    assert a.result(task_id, {"status": 200, "chunkCount": 1}).is_success
    t.join(10)
    assert "ok" in resp["r"].text and "FORGED" not in resp["r"].text
    # and B registering with A's session id gets a session of its own, not A's
    b.providers = [{"name": "other", "type": "echo", "model": "echo"}]
    assert b.register() != sid
    a.http.close()
    b.http.close()


def test_a_name_belongs_to_its_key_even_while_it_is_offline(keyed: Stack) -> None:
    key_a = create_key(keyed, role="publisher", label="box a")["secret"]
    key_b = create_key(keyed, role="publisher", label="box b")["secret"]
    a = ScriptedPublisher(keyed.url, key_a, ECHO)
    sid = a.register()
    a.post("_provider-deregister", {"providerSessionId": sid}).raise_for_status()
    b = ScriptedPublisher(keyed.url, key_b, ECHO)
    error = error_of(b.post("_provider-register", {"providers": ECHO}), 409, "name_owned")
    assert "echo" in error["message"] and sid not in error["message"]
    # A comes back and takes it; an admin's release lets B have it
    a.session_id = None
    a.register()
    a.post("_provider-deregister", {"providerSessionId": a.session_id}).raise_for_status()
    assert (
        httpx.delete(f"{keyed.url}/api/v1/llms/echo", headers=auth(keyed.admin_token)).status_code
        == 204
    )
    assert b.register()
    a.http.close()
    b.http.close()


def test_moving_from_the_shared_token_to_a_key_says_how_to_release_the_name(
    keyed: Stack,
) -> None:
    shared = ScriptedPublisher(keyed.url, keyed.publish_token, ECHO)
    sid = shared.register()
    shared.post("_provider-deregister", {"providerSessionId": sid}).raise_for_status()
    key = create_key(keyed, role="publisher", label="box")["secret"]
    moved = ScriptedPublisher(keyed.url, key, ECHO)
    error = error_of(moved.post("_provider-register", {"providers": ECHO}), 409, "name_owned")
    assert error["message"] == (
        "the name 'echo' belongs to the shared publish token (NATRELAY_PUBLISH_TOKEN), which "
        "published it before; choose another name, or have an admin release it: `natrelay "
        "llm delete echo` (or DELETE /api/v1/llms/echo) deletes its row and frees the name "
        "for this key"
    )
    released = httpx.delete(f"{keyed.url}/api/v1/llms/echo", headers=auth(keyed.admin_token))
    assert released.status_code == 204
    assert moved.register()
    shared.http.close()
    moved.http.close()


def test_session_ids_never_reach_clients(keyed: Stack) -> None:
    pub = create_key(keyed, role="publisher", label="p")["secret"]
    client = create_key(keyed, role="client", label="c")["secret"]
    with ScriptedPublisher(keyed.url, pub, ECHO) as p:
        assert p.session_id
        for path in ("/api/v1/llms", "/api/v1/llms/echo", "/v1/models"):
            text = httpx.get(f"{keyed.url}{path}", headers=auth(client)).text
            assert p.session_id not in text and "essionId" not in text
        text = chat(keyed, client).text
        assert p.session_id not in text


def test_a_client_key_sees_and_uses_only_its_models(keyed: Stack) -> None:
    pub = create_key(keyed, role="publisher", label="p")["secret"]
    scoped = create_key(keyed, role="client", label="c", models=["ech?"])["secret"]
    providers = [*ECHO, {"name": "secret-model", "type": "echo", "model": "echo"}]
    with ScriptedPublisher(keyed.url, pub, providers):
        oai = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=scoped, max_retries=0)
        assert [m.id for m in oai.models.list()] == ["echo"]
        rows = httpx.get(f"{keyed.url}/api/v1/llms", headers=auth(scoped)).json()["data"]
        assert [r["name"] for r in rows] == ["echo"]
        assert oai.chat.completions.create(model="echo", messages=MSG).choices  # type: ignore[arg-type]
        hidden = chat(keyed, scoped, model="secret-model").json()["error"]
        unknown = chat(keyed, scoped, model="no-such-model").json()["error"]
        # a model outside the scope answers exactly as an unknown one does
        same = ("type", "code", "param")
        assert {k: hidden[k] for k in same} == {k: unknown[k] for k in same}
        assert hidden["code"] == "model_not_found"
        with pytest.raises(openai.NotFoundError):
            oai.models.retrieve("secret-model")


def test_a_revoked_key_stops_working_within_the_cache_time(moto_server: MotoProcess) -> None:
    with running_stack(moto_server.endpoint, key_cache_seconds=2) as stack:
        other = start_api(stack.env)  # a second instance, which cached the key
        try:
            key = create_key(stack, role="client", label="soon gone")
            for url in (stack.url, other.url):
                assert httpx.get(f"{url}/v1/models", headers=auth(key["secret"])).is_success
            httpx.delete(
                f"{stack.url}/api/v1/keys/{key['id']}", headers=auth(stack.admin_token)
            ).raise_for_status()
            revoked_at = time.monotonic()
            # the instance that revoked it refuses at once
            resp = httpx.get(f"{stack.url}/v1/models", headers=auth(key["secret"]))
            assert "revoked" in error_of(resp, 401, "invalid_api_key")["message"]
            while httpx.get(f"{other.url}/v1/models", headers=auth(key["secret"])).is_success:
                assert time.monotonic() - revoked_at < 5, "still accepted past the cache time"
                time.sleep(0.2)
        finally:
            other.stop()


def test_the_rate_limit_is_shared_by_every_instance(keyed: Stack) -> None:
    pub = create_key(keyed, role="publisher", label="p")["secret"]
    limited = create_key(keyed, role="client", label="c", rpm=4)["secret"]
    other = start_api(keyed.env)
    try:
        with ScriptedPublisher(keyed.url, pub, ECHO):
            # wait for a fresh minute, so all five land in the same one
            while time.time() % 60 > 45:
                time.sleep(1)
            answers = [
                chat(keyed if i % 2 else _at(other, keyed), limited).status_code for i in range(5)
            ]
            assert answers[:4] == [200, 200, 200, 200]
            assert answers[4] == 429
            resp = chat(_at(other, keyed), limited)
            error = error_of(resp, 429, "rate_limit_exceeded")
            assert "4 requests per minute" in error["message"]
            assert 1 <= int(resp.headers["retry-after"]) <= 60
    finally:
        other.stop()


def _at(api: Server, stack: Stack) -> Stack:
    """The same relay, through another of its API processes."""
    return replace(stack, apis=[api])


def test_concurrency_and_token_budget_limits(keyed: Stack) -> None:
    pub = create_key(keyed, role="publisher", label="p")["secret"]
    single = create_key(keyed, role="client", label="c", concurrency=1)
    one_at_a_time = single["secret"]
    limited = create_key(keyed, role="client", label="b", tokens_per_day=10)
    budget = limited["secret"]
    publisher = ScriptedPublisher(keyed.url, pub, ECHO)
    publisher.register()
    # nobody answers yet: the first request holds the only slot, once it is queued
    first: dict[str, httpx.Response] = {}
    t = threading.Thread(target=lambda: first.setdefault("r", chat(keyed, one_at_a_time)))
    t.start()
    pool = f"{keyed.url}/api/v1/llms/echo"
    wait_until(
        lambda: httpx.get(pool, headers=auth(keyed.admin_token)).json()["queueDepth"] == 1,
        20,
        "the first request was not queued",
    )
    resp = chat(keyed, one_at_a_time)
    assert "1 requests in flight" in error_of(resp, 429, "rate_limit_exceeded")["message"]
    publisher.answer = _with_usage(8, 4)
    publisher.start()
    t.join(20)
    assert first["r"].status_code == 200
    assert chat(keyed, one_at_a_time).status_code == 200  # the slot was freed
    assert chat(keyed, budget).status_code == 200  # 12 tokens: over the budget of 10
    resp = chat(keyed, budget)
    error_of(resp, 429, "budget_exceeded")
    assert int(resp.headers["retry-after"]) > 0
    publisher.stop()
    # each refusal is counted on its key's day (added up with the rest of its usage)
    for key, served in ((single, 2), (limited, 1)):
        wait_until(lambda k=key: _today(keyed, k["id"])["refused"] == 1, 10, "refusal not counted")
        assert _today(keyed, key["id"])["requests"] == served


def _today(stack: Stack, key_id: str) -> dict[str, Any]:
    usage = httpx.get(f"{stack.url}/api/v1/keys/{key_id}/usage", headers=auth(stack.admin_token))
    days: list[dict[str, Any]] = usage.json()["days"]
    return days[-1] if days else {"requests": 0, "refused": 0}


def _with_usage(prompt: int, completion: int) -> Any:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }

    def answer(task: dict[str, Any], pub: ScriptedPublisher) -> None:
        if task["stream"]:
            chunks = [
                {
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": "hi"}}],
                },
                {"object": "chat.completion.chunk", "choices": [], "usage": usage},
            ]
            pub.chunk(task["id"], 0, chunks)
            pub.result(task["id"], {"status": 200, "body": {"usage": usage}, "chunkCount": 1})
        else:
            body = {
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
                "usage": usage,
            }
            pub.result(task["id"], {"status": 200, "body": body})

    return answer


def test_usage_counts_plain_and_streamed_requests(keyed: Stack) -> None:
    pub = create_key(keyed, role="publisher", label="p")["secret"]
    key = create_key(keyed, role="client", label="counted")
    with ScriptedPublisher(keyed.url, pub, ECHO, answer=_with_usage(7, 3)):
        assert chat(keyed, key["secret"]).status_code == 200
        stream = chat(keyed, key["secret"], stream=True, stream_options={"include_usage": True})
        assert stream.status_code == 200 and "[DONE]" in stream.text
        assert chat(keyed, key["secret"], model="missing").status_code == 404
    own = httpx.get(f"{keyed.url}/api/v1/usage", headers=auth(key["secret"])).json()
    by_admin = httpx.get(
        f"{keyed.url}/api/v1/keys/{key['id']}/usage?days=2", headers=auth(keyed.admin_token)
    ).json()
    assert own == by_admin
    [today] = own["days"]
    assert today["requests"] == 2
    assert (today["promptTokens"], today["completionTokens"]) == (14, 6)
    assert today["errors"] == 0
    error_of(
        httpx.get(f"{keyed.url}/api/v1/usage?days=0", headers=auth(key["secret"])),
        400,
        "invalid_request",
    )
    error_of(
        httpx.get(f"{keyed.url}/api/v1/keys/{key['id']}/usage", headers=auth(key["secret"])),
        403,
        "forbidden",
    )


def test_a_client_sees_only_its_own_tasks(keyed: Stack) -> None:
    pub = create_key(keyed, role="publisher", label="p")["secret"]
    alice = create_key(keyed, role="client", label="alice")["secret"]
    bob = create_key(keyed, role="client", label="bob")["secret"]
    with ScriptedPublisher(keyed.url, pub, ECHO):
        resp = httpx.post(
            f"{keyed.url}/api/v1/llms/echo/infer",
            headers={**auth(alice), "Prefer": "respond-async"},
            json={"messages": MSG},
        )
        assert resp.status_code == 202
        task = resp.headers["location"]
        assert httpx.get(f"{keyed.url}{task}", headers=auth(alice)).is_success
        error_of(httpx.get(f"{keyed.url}{task}", headers=auth(bob)), 404, "task_not_found")
        error_of(httpx.delete(f"{keyed.url}{task}", headers=auth(bob)), 404, "task_not_found")
        assert httpx.get(f"{keyed.url}{task}", headers=auth(keyed.admin_token)).is_success


def _slow_stream(task: dict[str, Any], pub: ScriptedPublisher) -> None:
    """40 chunks 0.25 s apart (10 s in all); stops when the relay says the client left."""
    for seq in range(40):
        chunk = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": "w "}}]}
        if pub.chunk(task["id"], seq, [chunk]).status_code == 409:
            pub.seen.append({"cancelled": task["id"]})
            return
        time.sleep(0.25)
    pub.result(task["id"], {"status": 200, "body": None, "chunkCount": 40})


def test_a_revoked_keys_open_streams_are_cut(keyed: Stack) -> None:
    """A stream that is already open ends soon after its key is revoked (within the key
    cache time: 0 here), with an error event, and the backend's work stops: published
    and public rows alike."""
    backend = FakeBackend(tokens=40, interval=0.25)
    with (
        serve(backend.app()) as backend_url,
        ScriptedPublisher(keyed.url, keyed.publish_token, ECHO, answer=_slow_stream) as pub,
    ):
        open_row = {"name": "open", "kind": "public", "baseUrl": f"{backend_url}/v1", "model": "m"}
        applied = httpx.post(
            f"{keyed.url}/api/v1/llms/_apply",
            headers=auth(keyed.admin_token),
            json={"documents": [open_row]},
        )
        assert applied.status_code == 200, applied.text
        client = create_key(keyed, role="client", label="leaving")
        ended: dict[str, tuple[float, str]] = {}
        started = threading.Barrier(3)

        def read(model: str) -> None:
            body = {"model": model, "messages": MSG, "stream": True}
            with httpx.stream(
                "POST",
                f"{keyed.url}/v1/chat/completions",
                headers=auth(client["secret"]),
                json=body,
                timeout=30,
            ) as resp:
                lines = resp.iter_lines()
                assert any('"content"' in line for line in lines)
                started.wait(timeout=20)
                last = ""
                for line in lines:
                    last = line or last
                ended[model] = (time.monotonic(), last)

        readers = [threading.Thread(target=read, args=(m,)) for m in ("echo", "open")]
        for reader in readers:
            reader.start()
        started.wait(timeout=20)
        revoked_at = time.monotonic()
        httpx.delete(
            f"{keyed.url}/api/v1/keys/{client['id']}", headers=auth(keyed.admin_token)
        ).raise_for_status()
        for reader in readers:
            reader.join(timeout=30)
        for model in ("echo", "open"):
            at, last = ended[model]
            assert at - revoked_at < 5, (model, at - revoked_at)  # not the 10 s stream
            assert "invalid_api_key" in last and "revoked" in last, (model, last)
        assert wait_until(lambda: any("cancelled" in seen for seen in pub.seen), 10)
        assert wait_until(backend.aborted.is_set, 10)
