"""A synchronous client that stops waiting — its wait ran out, or it hung up — without a
way back to its task: the task is cancelled and its publisher told (web.abandon,
service.abandoned)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from natrelay.wire import HeartbeatRequest, Paths, PollRequest, PollResponse, SessionResponse
from natrelay_infra.moto_server import MotoProcess
from tests.server.test_web import ECHO, MSG, assert_openai_error, auth
from tests.support.net import post_unread, wait_until
from tests.support.scripted import ScriptedPublisher
from tests.support.stack import Stack, dynamodb_client, running_stack


def _state(stack: Stack, task_id: str) -> str:
    got = httpx.get(f"{stack.url}/api/v1/tasks/{task_id}", headers=auth(stack.client_token))
    return str(got.json()["state"])


def _timed_out(stack: Stack) -> tuple[dict[str, Any], str]:
    """A chat request its relay answers 504 (nobody answers it): the error and the task."""
    resp = httpx.post(
        f"{stack.url}/v1/chat/completions",
        headers=auth(stack.client_token),
        json={"model": "echo", "messages": MSG},
        timeout=10,
    )
    error = assert_openai_error(resp, 504, "timeout")
    return error, resp.headers["location"].rsplit("/", 1)[1]


def _told(pub: ScriptedPublisher, task_id: str) -> list[str] | None:
    """What the relay says of the task in a heartbeat that says it runs it."""
    assert pub.session_id is not None
    beat = HeartbeatRequest(provider_session_id=pub.session_id, running=[task_id])
    resp = pub.send(Paths.HEARTBEAT, beat)
    resp.raise_for_status()
    return SessionResponse.model_validate(resp.json()).cancelled


@pytest.mark.parametrize("fast_path", [True, False], ids=["handed", "durable"])
def test_a_sync_timeout_cancels_the_task_and_its_publisher_is_told(
    moto_server: MotoProcess, fast_path: bool
) -> None:
    with running_stack(
        moto_server.endpoint, request_timeout_seconds=1, fast_path=fast_path
    ) as stack:
        held: list[dict[str, Any]] = []
        with ScriptedPublisher(
            stack.url, stack.publish_token, ECHO, answer=lambda task, pub: held.append(task)
        ) as pub:
            error, task_id = _timed_out(stack)
            assert "no answer within 1 s; the request was cancelled" in error["message"]
            assert "respond-async" in error["message"] and "fetch it later" not in error["message"]
            assert _state(stack, task_id) == "cancelled"
            assert _told(pub, task_id) == [task_id]
            late = pub.result(task_id, {"status": 200, "body": {"answer": "late"}})
            assert_openai_error(late, 409, "task_cancelled")


def test_a_task_still_wanted_is_not_named(stack: Stack) -> None:
    held: list[dict[str, Any]] = []
    with ScriptedPublisher(
        stack.url, stack.publish_token, ECHO, answer=lambda task, pub: held.append(task)
    ) as pub:
        queued = httpx.post(
            f"{stack.url}/api/v1/llms/echo/infer",
            headers={**auth(stack.client_token), "Prefer": "respond-async"},
            json={"messages": MSG},
        )
        assert queued.status_code == 202
        task_id = queued.json()["id"]
        wait_until(lambda: held, 10, "the publisher got no task")
        assert _told(pub, task_id) is None
        # a poll carries the same answer (another session's task is not its to run)
        other = ScriptedPublisher(
            stack.url, stack.publish_token, [{"name": "x", "type": "echo", "model": "echo"}]
        )
        other.register()
        assert other.session_id is not None
        poll = PollRequest(provider_session_id=other.session_id, wait_seconds=0, running=[task_id])
        answered = PollResponse.model_validate(other.send(Paths.POLL, poll).json())
        assert answered.cancelled == [task_id]


def test_the_504_of_the_api_gateway_route_names_the_url_that_waits_longer(
    moto_server: MotoProcess,
) -> None:
    with (
        running_stack(
            moto_server.endpoint,
            request_timeout_seconds=1,
            long_request_url="https://abc.lambda-url.eu-west-1.on.aws/",
            long_request_timeout_seconds=840,
        ) as stack,
        ScriptedPublisher(stack.url, stack.publish_token, ECHO, answer=lambda task, pub: None),
    ):
        error, _ = _timed_out(stack)
    assert "API Gateway cuts requests at 30 s" in error["message"]
    assert (
        "call https://abc.lambda-url.eu-west-1.on.aws, which waits up to 840 s"
        in (error["message"])
    )


def test_a_client_that_hangs_up_has_its_task_cancelled(stack: Stack) -> None:
    held: list[dict[str, Any]] = []
    with ScriptedPublisher(
        stack.url, stack.publish_token, ECHO, answer=lambda task, pub: held.append(task)
    ) as pub:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{stack.url}/v1/chat/completions",
                headers=auth(stack.client_token),
                json={"model": "echo", "messages": MSG},
                timeout=httpx.Timeout(10, read=1.0),  # the client gives up; the relay waits on
            )
        wait_until(lambda: held, 10, "the publisher got no task")
        task_id = held[0]["id"]
        wait_until(lambda: _state(stack, task_id) == "cancelled", 15, "the task runs on")
        assert _told(pub, task_id) == [task_id]


def test_only_the_sessions_own_key_hears_of_its_cancels(keyed: Stack) -> None:
    """The mark a cancel leaves on the session that runs the task (service.abandoned) is
    taken by that session's own key alone: another key naming the session, or the key
    once revoked, gets a refusal that names nothing, and the mark stays."""
    admin = auth(keyed.admin_token)
    made = httpx.post(
        f"{keyed.url}/api/v1/keys", headers=admin, json={"role": "publisher", "label": "a"}
    ).json()
    other = httpx.post(
        f"{keyed.url}/api/v1/keys", headers=admin, json={"role": "publisher", "label": "b"}
    ).json()
    a = ScriptedPublisher(keyed.url, made["secret"], ECHO)
    sid = a.register()
    body = {"model": "echo", "messages": MSG}
    client = post_unread(keyed.url, "/v1/chat/completions", body, keyed.client_token)
    [task] = wait_until(lambda: a.poll_once(wait=1), 15, "A claimed nothing")
    client.close()  # the client hangs up while A runs its task
    wait_until(lambda: _state(keyed, task["id"]) == "cancelled", 15, "the task runs on")
    beat = {"providerSessionId": sid, "running": [task["id"]], "work": True}
    b = ScriptedPublisher(keyed.url, other["secret"], ECHO)
    refused = b.post("_provider-heartbeat", beat)
    assert refused.status_code == 403 and "cancelled" not in refused.json()
    httpx.delete(f"{keyed.url}/api/v1/keys/{made['id']}", headers=admin).raise_for_status()
    revoked = a.post("_provider-heartbeat", beat)
    assert revoked.status_code == 401 and "cancelled" not in revoked.json()
    assert task["id"] not in refused.text + revoked.text
    item = dynamodb_client(keyed.moto_endpoint).get_item(
        TableName=keyed.tables.tasks, Key={"pk": {"S": f"session#{sid}"}, "sk": {"S": "m"}}
    )["Item"]
    assert item["cancelled"]["SS"] == [task["id"]]  # still there, for A's key alone
    a.http.close()
    b.http.close()
