"""Odd and oversized input on a real relay (uvicorn + moto): always a 4xx naming the
problem, never a 500 and never a stuck task."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import httpx
import openai
import pytest

from natrelay.wire import ProviderSpec, RegisterRequest
from tests.support.scripted import ScriptedPublisher
from tests.support.stack import Stack

ECHO = [{"name": "echo", "type": "echo", "model": "echo"}]
MSG = [{"role": "user", "content": "the quick brown fox"}]
REGISTER = "/api/v1/llms/_provider-register"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(resp: httpx.Response, status: int, code: str = "invalid_request") -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["code"] == code and error["message"], error
    return error


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (b"[" * 100_000, "deep"),
        (b'{"model": "echo", "messages": [], "n": ' + b"7" * 5000 + b"}", "digits"),
        (b'{"model": "echo", "messages": [], "temperature": NaN}', "NaN"),
        (b'{"model": "echo", "messages": [], "temperature": -Infinity}', "Infinity"),
        (b'{"model": "echo", "messages": [], "temperature": 1e999}', "1e999"),
    ],
)
def test_bodies_json_cannot_carry_are_400_naming_the_problem(
    shared_stack: Stack, raw: bytes, named: str
) -> None:
    for path, token in (
        ("/v1/chat/completions", shared_stack.client_token),
        ("/api/v1/llms/echo/infer", shared_stack.client_token),
        (REGISTER, shared_stack.publish_token),
        ("/api/v1/llms/_provider-poll", shared_stack.publish_token),
        ("/api/v1/keys", shared_stack.admin_token),
    ):
        resp = httpx.post(f"{shared_stack.url}{path}", headers=auth(token), content=raw)
        assert named in error_of(resp, 400)["message"], (path, resp.text)


def test_register_names_bad_providers(stack: Stack) -> None:
    def register(providers: list[dict[str, Any]]) -> httpx.Response:
        return httpx.post(
            f"{stack.url}{REGISTER}",
            headers=auth(stack.publish_token),
            json={"providers": providers},
        )

    twice = register([ECHO[0], {**ECHO[0], "model": "other"}])
    error = error_of(twice, 400)
    assert error["param"] == "providers" and "echo" in error["message"]
    # JSON that DynamoDB could not hold as a map (too deep, too many digits) is stored
    deep: Any = {"x": 1}
    for _ in range(40):
        deep = {"x": deep}
    odd = {**ECHO[0], "extraConfig": {"deep": deep, "big": 10**40, "tiny": 1e-200}}
    assert register([odd]).status_code == 200, "extraConfig DynamoDB cannot hold as a map"
    huge = {**ECHO[0], "name": "huge", "extraConfig": {"blob": "x" * 100_000}}
    assert error_of(register([huge]), 400)["param"] == "providers.0.extraConfig"


def test_a_huge_backend_error_reaches_the_client_truncated(stack: Stack) -> None:
    def fail(task: dict[str, Any], pub: ScriptedPublisher) -> None:
        got = pub.result(
            task["id"], {"status": 502, "error": {"message": "E" * 500_000, "code": "x"}}
        )
        assert got.status_code == 200, got.text

    with ScriptedPublisher(stack.url, stack.publish_token, ECHO, answer=fail):
        resp = httpx.post(
            f"{stack.url}/v1/chat/completions",
            headers=auth(stack.client_token),
            json={"model": "echo", "messages": MSG},
            timeout=30,
        )
    message = error_of(resp, 502, "backend_error")["message"]
    assert message.startswith("EEE") and "[truncated" in message and len(message) < 20_000


def test_a_result_json_cannot_carry_is_refused_and_the_task_still_ends(stack: Stack) -> None:
    refused: list[httpx.Response] = []

    def infinite(task: dict[str, Any], pub: ScriptedPublisher) -> None:
        body = b'{"providerSessionId": "%s", "status": 200, "body": {"logprob": -Infinity}}'
        resp = pub.http.post(
            f"/api/v1/llms/_provider-task/{task['id']}/result",
            content=body % (pub.session_id or "").encode(),
        )
        refused.append(resp)
        # what the publisher does with a refused answer: it reports it as a failure
        pub.result(
            task["id"],
            {
                "status": 502,
                "error": {"message": resp.json()["error"]["message"], "code": "backend_error"},
            },
        )

    with ScriptedPublisher(stack.url, stack.publish_token, ECHO, answer=infinite):
        resp = httpx.post(
            f"{stack.url}/v1/chat/completions",
            headers=auth(stack.client_token),
            json={"model": "echo", "messages": MSG},
            timeout=30,
        )
    assert "Infinity" in error_of(refused[0], 400)["message"]
    assert "Infinity" in error_of(resp, 502, "backend_error")["message"]


def test_a_wake_result_posted_after_the_session_is_gone_is_no_500(stack: Stack) -> None:
    sleepy = [{**ECHO[0], "initialStatus": "hibernating", "wakeMaxWaitSeconds": 10}]
    pub = ScriptedPublisher(stack.url, stack.publish_token, sleepy)
    sid = pub.register()
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        queued = http.post(
            "/api/v1/llms/echo/infer",
            headers={**auth(stack.client_token), "Prefer": "respond-async"},
            json={"messages": MSG},
        )
        assert queued.status_code == 202
        wake = next(t for t in pub.poll_once(wait=2) if t["kind"] == "wake")
        pub.post("_provider-deregister", {"providerSessionId": sid}).raise_for_status()
        for _ in range(3):  # the publisher retries: every answer is clean
            resp = pub.result(wake["id"], {"status": 200, "body": {"ok": True, "ms": 5}})
            assert resp.status_code == 200, resp.text
        row = http.get("/api/v1/llms/echo", headers=auth(stack.client_token)).json()
        assert row["status"] == "inactive" and not row["waking"]
    pub.http.close()


def test_a_chunked_body_is_cut_at_the_limit_not_read_whole(shared_stack: Stack) -> None:
    """150 MiB sent chunked (no Content-Length): the relay answers 413 once it has read
    past its limit, long before the end (it used to buffer it all first)."""
    host, port = shared_stack.url.removeprefix("http://").split(":")
    total, piece = 150 * 1024 * 1024, b"x" * (1024 * 1024)
    sent = [0]
    answer = b""

    def send(sock: socket.socket) -> None:
        try:
            while sent[0] < total:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent[0] += len(piece)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the relay answered and closed while we were still sending

    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: relay\r\n"
            + f"Authorization: Bearer {shared_stack.client_token}\r\n".encode()
            + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sender = threading.Thread(target=send, args=(sock,), daemon=True)
        sender.start()
        answer = sock.recv(65536)
        sent_when_answered = sent[0]
        sock.shutdown(socket.SHUT_RDWR)
        sender.join(timeout=30)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent_when_answered < total / 2, f"{sent_when_answered} bytes sent before the 413"


def test_answers_name_the_public_model_not_the_backends(stack: Stack) -> None:
    def leaky(task: dict[str, Any], pub: ScriptedPublisher) -> None:
        local = "/home/alice/models/llama-3-8b-q4.gguf"
        chunk = {"object": "chat.completion.chunk", "model": local}
        if task["stream"]:
            for seq in range(2):
                pub.chunk(
                    task["id"],
                    seq,
                    [{**chunk, "choices": [{"index": 0, "delta": {"content": f"w{seq}"}}]}],
                )
            pub.result(task["id"], {"status": 200, "body": None, "chunkCount": 2})
            return
        message = {"role": "assistant", "content": "hi"}
        pub.result(
            task["id"],
            {
                "status": 200,
                "body": {
                    "object": "chat.completion",
                    "id": "x",
                    "model": local,
                    "created": 0,
                    "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                },
            },
        )

    with ScriptedPublisher(stack.url, stack.publish_token, ECHO, answer=leaky):
        oai = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.client_token, max_retries=0)
        reply = oai.chat.completions.create(model="echo", messages=MSG)  # type: ignore[arg-type]
        assert reply.model == "echo"
        stream = oai.chat.completions.create(model="echo", messages=MSG, stream=True)  # type: ignore[arg-type]
        assert {chunk.model for chunk in stream} == {"echo"}
        async_task = httpx.post(
            f"{stack.url}/api/v1/llms/echo/infer",
            headers={**auth(stack.client_token), "Prefer": "respond-async"},
            json={"messages": MSG},
        ).json()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = httpx.get(
                f"{stack.url}/api/v1/tasks/{async_task['id']}", headers=auth(stack.client_token)
            ).json()
            if got["state"] == "completed":
                break
            time.sleep(0.1)
        assert got["result"]["model"] == "echo"
    assert "alice" not in json.dumps(got)


@pytest.mark.parametrize(
    ("odd", "param"),
    [
        ({"status": 200, "body": {}, "chunkCount": 10**50}, "chunkCount"),
        ({"status": 103, "body": {"a": 1}}, "status"),
        ({"status": 204, "body": {"a": 1}}, "status"),
        ({"status": 304, "body": {"a": 1}}, "status"),
        ({"status": 503, "body": {"a": 1}}, "status"),
        ({"status": 200, "body": {}, "chunkCount": -1}, "chunkCount"),
    ],
)
def test_odd_results_are_refused_naming_the_field_and_the_task_still_ends(
    stack: Stack, odd: dict[str, Any], param: str
) -> None:
    """A result's `status` reaches the client as its HTTP status: a completed one must
    be a 2xx with a body (failures come with `error`); `chunkCount` must fit."""
    refused: list[httpx.Response] = []

    def answer(task: dict[str, Any], pub: ScriptedPublisher) -> None:
        resp = pub.http.post(
            f"/api/v1/llms/_provider-task/{task['id']}/result",
            json={"providerSessionId": pub.session_id, **odd},
        )
        refused.append(resp)
        pub.result(task["id"], {"status": 200, "body": {"object": "chat.completion"}})

    with ScriptedPublisher(stack.url, stack.publish_token, ECHO, answer=answer):
        resp = httpx.post(
            f"{stack.url}/v1/chat/completions",
            headers=auth(stack.client_token),
            json={"model": "echo", "messages": MSG},
            timeout=30,
        )
    assert error_of(refused[0], 400)["param"] == param
    assert resp.status_code == 200 and resp.json() == {"object": "chat.completion"}
    assert "x-should-retry" not in resp.headers


def test_a_chunk_seq_past_the_limit_is_refused_naming_it(stack: Stack) -> None:
    refused: list[httpx.Response] = []

    def answer(task: dict[str, Any], pub: ScriptedPublisher) -> None:
        refused.append(
            pub.http.post(
                f"/api/v1/llms/_provider-task/{task['id']}/chunks",
                json={"providerSessionId": pub.session_id, "seq": 10**50, "chunks": [{}]},
            )
        )
        pub.result(task["id"], {"status": 200, "body": {"object": "chat.completion"}})

    with ScriptedPublisher(stack.url, stack.publish_token, ECHO, answer=answer):
        httpx.post(
            f"{stack.url}/v1/chat/completions",
            headers=auth(stack.client_token),
            json={"model": "echo", "messages": MSG},
            timeout=30,
        )
    assert error_of(refused[0], 400)["param"] == "seq"


def test_a_rows_backend_model_is_shown_to_admins_and_its_publisher_only(stack: Stack) -> None:
    local = "/home/alice/models/llama-3-8b-q4.gguf"
    pub = ScriptedPublisher(stack.url, stack.publish_token, [{**ECHO[0], "model": local}])
    registered = pub.send(
        "/api/v1/llms/_provider-register",
        RegisterRequest(providers=[ProviderSpec.model_validate({**ECHO[0], "model": local})]),
    ).json()
    assert registered["llms"][0]["model"] == local  # its own publisher

    def seen(token: str) -> str:
        return "\n".join(
            httpx.get(f"{stack.url}{path}", headers=auth(token), timeout=10).text
            for path in ("/api/v1/llms", "/api/v1/llms/echo", "/v1/models", "/v1/models/echo")
        )

    assert "alice" not in seen(stack.client_token)
    assert local in seen(stack.admin_token)
    pub.http.close()
