"""The HTTP surface on a real uvicorn server, moto behind it, the official openai client."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import httpx
import openai
import pytest

from natrelay_infra.moto_server import MotoProcess
from tests.support.scripted import ScriptedPublisher
from tests.support.stack import Stack, running_stack

ECHO = [{"name": "echo", "type": "echo", "model": "echo"}]
MSG = [{"role": "user", "content": "the quick brown fox"}]


def client(stack: Stack, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack.url}/v1", api_key=stack.client_token, max_retries=0, **kw
    )


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_openai_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]
    return error


def test_openai_client_lists_models_and_chats_plain_and_streamed(stack: Stack) -> None:
    with ScriptedPublisher(stack.url, stack.publish_token, ECHO):
        oai = client(stack)
        assert [m.id for m in oai.models.list()] == ["echo"]
        reply = oai.chat.completions.create(model="echo", messages=MSG)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == "the quick brown fox"
        stream = oai.chat.completions.create(model="echo", messages=MSG, stream=True)  # type: ignore[arg-type]
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "the quick brown fox"


def test_unknown_model_is_a_not_found_error(shared_stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(shared_stack).chat.completions.create(model="nope", messages=MSG)  # type: ignore[arg-type]
    assert "nope" in str(info.value)


def test_auth_errors(shared_stack: Stack) -> None:
    url = f"{shared_stack.url}/v1/models"
    assert_openai_error(httpx.get(url), 401, "invalid_api_key")
    assert_openai_error(httpx.get(url, headers=auth("wrong-token")), 401, "invalid_api_key")
    assert_openai_error(httpx.get(url, headers=auth(shared_stack.publish_token)), 403, "forbidden")
    for bad in ("tökén-ünïcode", "x" * 5000, "nrk_0123456789ab_" + "y" * 43, "a\tb"):
        # non-ASCII, oversized, a made-up key, a control character: 401, never a 500
        resp = httpx.get(url, headers={"Authorization": f"Bearer {bad}".encode()})
        assert_openai_error(resp, 401, "invalid_api_key")
    poll = f"{shared_stack.url}/api/v1/llms/_provider-poll"
    assert_openai_error(
        httpx.post(poll, headers=auth(shared_stack.client_token), json={}), 403, "forbidden"
    )
    assert httpx.get(f"{shared_stack.url}/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": MSG}, "model"),
        ({"model": "echo", "messages": []}, "messages"),
        ({"model": "echo", "messages": "hi"}, "messages"),
        ({"model": "echo", "messages": MSG, "stream": "often"}, "stream"),
    ],
)
def test_invalid_chat_bodies_name_the_field(
    shared_stack: Stack, body: dict[str, Any], param: str
) -> None:
    resp = httpx.post(
        f"{shared_stack.url}/v1/chat/completions",
        headers=auth(shared_stack.client_token),
        json=body,
    )
    assert assert_openai_error(resp, 400, "invalid_request")["param"] == param


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
def test_garbage_bodies_are_client_errors_not_500(shared_stack: Stack, raw: bytes) -> None:
    for path, token in (
        ("/v1/chat/completions", shared_stack.client_token),
        ("/api/v1/llms/_provider-register", shared_stack.publish_token),
        ("/api/v1/llms/_provider-poll", shared_stack.publish_token),
    ):
        resp = httpx.post(f"{shared_stack.url}{path}", headers=auth(token), content=raw)
        assert 400 <= resp.status_code < 500, (path, resp.text)
        assert resp.json()["error"]["message"]


def test_publisher_endpoints_name_the_bad_field(shared_stack: Stack) -> None:
    resp = httpx.post(
        f"{shared_stack.url}/api/v1/llms/_provider-register",
        headers=auth(shared_stack.publish_token),
        json={"providers": [{"name": "bad name!", "type": "echo", "model": "m"}]},
    )
    assert assert_openai_error(resp, 400, "invalid_request")["param"] == "providers.0.name"
    resp = httpx.post(
        f"{shared_stack.url}/api/v1/llms/_provider-poll",
        headers=auth(shared_stack.publish_token),
        json={"providerSessionId": "abcdefgh123", "waitSeconds": 99},
    )
    assert assert_openai_error(resp, 400, "invalid_request")["param"] == "waitSeconds"
    resp = httpx.post(
        f"{shared_stack.url}/api/v1/llms/_provider-heartbeat",
        headers=auth(shared_stack.publish_token),
        json={"providerSessionId": "abcdefgh123"},
    )
    # unknown or another key's: the same answer, so a session id alone tells nothing
    assert_openai_error(resp, 403, "session_forbidden")


def test_a_second_publisher_of_the_same_key_joins_the_pool(stack: Stack) -> None:
    with ScriptedPublisher(stack.url, stack.publish_token, ECHO) as first:
        second = ScriptedPublisher(stack.url, stack.publish_token, ECHO)
        assert second.register() != first.session_id
        row = httpx.get(f"{stack.url}/api/v1/llms/echo", headers=auth(stack.client_token)).json()
        assert len(row["members"]) == 2
        assert all(first.session_id not in str(m) for m in row["members"])
        second.http.close()


def test_body_over_six_megabytes_is_413_naming_the_limit(shared_stack: Stack) -> None:
    body = json.dumps({"model": "echo", "messages": [{"role": "user", "content": "x" * 7_000_000}]})
    resp = httpx.post(
        f"{shared_stack.url}/v1/chat/completions",
        headers=auth(shared_stack.client_token),
        content=body,
        timeout=30,
    )
    assert "6291456" in assert_openai_error(resp, 413, "payload_too_large")["message"]


def test_inactive_llm_is_503_with_retry_after_saying_offline(stack: Stack) -> None:
    pub = ScriptedPublisher(stack.url, stack.publish_token, ECHO)
    sid = pub.register()
    pub.post("_provider-deregister", {"providerSessionId": sid}).raise_for_status()
    pub.http.close()
    resp = httpx.post(
        f"{stack.url}/v1/chat/completions",
        headers=auth(stack.client_token),
        json={"model": "echo", "messages": MSG},
    )
    error = assert_openai_error(resp, 503, "publisher_offline")
    assert "offline" in error["message"] and int(resp.headers["retry-after"]) > 0
    rows = httpx.get(f"{stack.url}/api/v1/llms", headers=auth(stack.client_token)).json()
    assert rows["data"][0]["status"] == "inactive" and rows["data"][0]["inactiveSince"]


def test_backend_failure_is_502_with_its_message(stack: Stack) -> None:
    def fail(task: dict[str, Any], pub: ScriptedPublisher) -> None:
        pub.result(
            task["id"],
            {
                "status": 502,
                "error": {
                    "message": "connection refused by http://127.0.0.1:8000/v1",
                    "code": "backend_error",
                },
            },
        )

    with (
        ScriptedPublisher(stack.url, stack.publish_token, ECHO, answer=fail),
        pytest.raises(openai.APIStatusError) as info,
    ):
        client(stack).chat.completions.create(model="echo", messages=MSG)  # type: ignore[arg-type]
    assert info.value.status_code == 502 and "connection refused" in str(info.value)


def test_row_endpoints(stack: Stack) -> None:
    with ScriptedPublisher(
        stack.url,
        stack.publish_token,
        [{"name": "org/model-1", "type": "openai", "model": "m", "tier": "gpu"}],
    ):
        h = auth(stack.client_token)
        row = httpx.get(f"{stack.url}/api/v1/llms/org/model-1", headers=h).json()
        admin_row = httpx.get(
            f"{stack.url}/api/v1/llms/org/model-1", headers=auth(stack.admin_token)
        ).json()
    assert {k: row[k] for k in ("name", "kind", "type", "tier", "status")} == {
        "name": "org/model-1",
        "kind": "virtual",
        "type": "openai",
        "tier": "gpu",
        "status": "active",
    }
    assert "model" not in row  # the backend's id: for admins and its publisher only
    assert admin_row["model"] == "m"
    # (the publisher stopped polling, or its next poll would rightly be refused: 404)
    gone = f"{stack.url}/api/v1/llms/org/model-1"
    # deleting a row is an admin's job
    assert_openai_error(httpx.delete(gone, headers=h), 403, "forbidden")
    assert httpx.delete(gone, headers=auth(stack.admin_token)).status_code == 204
    assert_openai_error(
        httpx.get(f"{stack.url}/api/v1/llms/org/model-1", headers=h), 404, "model_not_found"
    )


def test_sync_timeout_with_an_idempotency_key_is_504_naming_the_task_that_stays_fetchable(
    moto_server: MotoProcess,
) -> None:
    """An Idempotency-Key is a way back to the task (its retry finds it): the task goes
    on. Without one it is cancelled (tests/server/test_abandon.py)."""
    with running_stack(moto_server.endpoint, request_timeout_seconds=1) as stack:
        held: list[dict[str, Any]] = []
        with ScriptedPublisher(
            stack.url, stack.publish_token, ECHO, answer=lambda task, pub: held.append(task)
        ) as pub:
            resp = httpx.post(
                f"{stack.url}/v1/chat/completions",
                headers={**auth(stack.client_token), "Idempotency-Key": "once"},
                json={"model": "echo", "messages": MSG},
                timeout=10,
            )
            error = assert_openai_error(resp, 504, "timeout")
            task_id = resp.headers["location"].rsplit("/", 1)[1]
            assert task_id in error["message"]
            pub.result(task_id, {"status": 200, "body": {"answer": "late"}}).raise_for_status()
        got = httpx.get(f"{stack.url}/api/v1/tasks/{task_id}", headers=auth(stack.client_token))
        assert got.json()["state"] == "completed" and got.json()["result"] == {"answer": "late"}


def test_async_task_polled_to_completion_and_events_resume_without_gap(stack: Stack) -> None:
    words = [f"w{i}" for i in range(12)]

    def slow_stream(task: dict[str, Any], pub: ScriptedPublisher) -> None:
        for seq, word in enumerate(words):
            pub.chunk(
                task["id"],
                seq,
                [
                    {"choices": [{"delta": {"content": word}}]},
                    {"choices": [{"delta": {"content": " "}}]},
                ],
            )
            time.sleep(0.05)
        pub.result(
            task["id"],
            {"status": 200, "body": {"usage": {"completion_tokens": 12}}, "chunkCount": len(words)},
        )

    with ScriptedPublisher(stack.url, stack.publish_token, ECHO, answer=slow_stream):
        h = auth(stack.client_token)
        resp = httpx.post(
            f"{stack.url}/api/v1/llms/echo/infer",
            headers={**h, "Prefer": "respond-async"},
            json={"messages": MSG, "stream": True},
        )
        assert resp.status_code == 202 and resp.headers["preference-applied"] == "respond-async"
        location = resp.headers["location"]
        assert location == f"/api/v1/tasks/{resp.json()['id']}"
        # read the first few events, drop the connection, resume from the last id
        seen: list[tuple[str, str]] = []
        with httpx.stream("GET", f"{stack.url}{location}/events", headers=h, timeout=30) as r:
            event_id = None
            for line in r.iter_lines():
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: ") and event_id:
                    seen.append((event_id, line[6:]))
                    if len(seen) == 5:
                        break
        last = seen[-1][0]
        ended = None
        with httpx.stream(
            "GET", f"{stack.url}{location}/events", headers={**h, "Last-Event-ID": last}, timeout=30
        ) as r:
            event_id, kind = None, None
            for line in r.iter_lines():
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    if kind == "end":
                        ended = json.loads(line[6:])
                    else:
                        seen.append((event_id or "", line[6:]))
        ids = [i for i, _ in seen]
        assert len(ids) == len(set(ids)) == 2 * len(words)  # no duplicate, no gap
        text = "".join(json.loads(d)["choices"][0]["delta"]["content"] for _, d in seen)
        assert text == " ".join(words) + " "
        assert ended is not None and ended["state"] == "completed"
        final = httpx.get(f"{stack.url}{location}", headers=h).json()
        assert final["state"] == "completed" and final["chunkCount"] == len(words)


def test_a_poll_whose_publisher_hung_up_stops_counting_as_a_heartbeat(stack: Stack) -> None:
    pub = ScriptedPublisher(stack.url, stack.publish_token, ECHO)
    sid = pub.register()
    with pytest.raises(httpx.ReadTimeout):
        pub.http.post(
            "/api/v1/llms/_provider-poll",
            timeout=0.5,
            json={"providerSessionId": sid, "waitSeconds": 20, "maxTasks": 1},
        )
    hung_up = time.time()
    time.sleep(3.5)  # the heartbeat refresh is due every 1.25 s with a 5 s timeout
    row = httpx.get(f"{stack.url}/api/v1/llms/echo", headers=auth(stack.client_token)).json()
    beat = datetime.fromisoformat(row["lastHeartbeatAt"].replace("Z", "+00:00")).timestamp()
    assert beat < hung_up + 1.0, "the abandoned poll kept the publisher looking alive"
    pub.http.close()


def test_a_stream_that_fails_before_its_first_token_is_a_plain_http_error(stack: Stack) -> None:
    def fail(task: dict[str, Any], pub: ScriptedPublisher) -> None:
        pub.result(
            task["id"],
            {"status": 502, "error": {"message": "model not loaded", "code": "backend_error"}},
        )

    with (
        ScriptedPublisher(stack.url, stack.publish_token, ECHO, answer=fail),
        pytest.raises(openai.APIStatusError) as info,
    ):
        client(stack).chat.completions.create(model="echo", messages=MSG, stream=True)  # type: ignore[arg-type]
    assert info.value.status_code == 502 and "model not loaded" in str(info.value)


def test_a_stream_that_fails_midway_ends_with_an_error_event(stack: Stack) -> None:
    def fail_late(task: dict[str, Any], pub: ScriptedPublisher) -> None:
        pub.chunk(
            task["id"],
            0,
            [
                {
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": "par"}}],
                }
            ],
        )
        pub.result(
            task["id"],
            {
                "status": 502,
                "chunkCount": 1,
                "error": {"message": "CUDA out of memory", "code": "backend_error"},
            },
        )

    with ScriptedPublisher(stack.url, stack.publish_token, ECHO, answer=fail_late):
        stream = client(stack).chat.completions.create(model="echo", messages=MSG, stream=True)  # type: ignore[arg-type]
        got = []
        with pytest.raises(openai.APIError, match="CUDA out of memory"):
            for chunk in stream:
                got.append(chunk.choices[0].delta.content)
    assert got == ["par"]
