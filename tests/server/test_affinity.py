"""Affinity on a real relay (uvicorn + moto, server and Lambda mode): every turn of a
conversation goes back to the member that ran it, unless that member stays busy past
the wait; what names a conversation."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from natrelay.service.affinity import Talk, conversation
from natrelay.wire import CONVERSATION_HEADER, Endpoint
from natrelay_infra.moto_server import MotoProcess
from tests.server.test_pools import Held
from tests.support.net import wait_until
from tests.support.scripted import ScriptedPublisher, echo_answer
from tests.support.stack import Stack, running_stack

ECHO = [{"name": "m", "type": "echo", "model": "m"}]
SYSTEM = {"role": "system", "content": "be brief"}


def turns(opening: str, n: int) -> list[dict[str, Any]]:
    """The messages of a conversation's turn n (0: its first)."""
    messages: list[dict[str, Any]] = [SYSTEM, {"role": "user", "content": opening}]
    for i in range(n):
        messages += [
            {"role": "assistant", "content": f"answer {i}"},
            {"role": "user", "content": f"{opening} more {i}"},
        ]
    return messages


def test_what_names_a_conversation() -> None:
    def chat(body: dict[str, Any], named: str | None = None, key: str = "k") -> Talk | None:
        return conversation(Endpoint.CHAT, body, named, key)

    first, later = chat({"messages": turns("a", 0)}), chat({"messages": turns("a", 3)})
    assert first is not None and later is not None
    assert first.digest == later.digest  # every turn repeats the opening...
    assert not first.continues and later.continues  # ...and only later ones carry history
    assert chat({"messages": turns("b", 3)}) != later
    by_user = chat({"messages": turns("a", 0), "user": "u1"})
    assert by_user is not None and by_user == chat({"messages": [], "user": "u1"})
    # a session a caller names goes on (its key's: another key's same name is another one)
    named = chat({"messages": []}, "s1")
    assert named is not None and named.continues
    assert named != chat({"messages": []}, "s1", key="other")
    anthropic = {"system": "be brief", "messages": turns("a", 2)[1:]}
    again = conversation(Endpoint.MESSAGES, {**anthropic, "messages": turns("a", 0)[1:]}, None, "k")
    assert again is not None and conversation(Endpoint.MESSAGES, anthropic, None, "k") == Talk(
        again.digest, continues=True
    )
    responses = {"instructions": "x", "input": [{"role": "user", "content": "a"}]}
    assert conversation(Endpoint.RESPONSES, responses, None, "k") is not None
    assert conversation(Endpoint.EMBEDDINGS, {"input": "a"}, None, "k") is None


class Members:
    """Publishers of one pool that note which of them answered what."""

    def __init__(self, stack: Stack, count: int) -> None:
        self.served: dict[str, str] = {}  # the request's last message -> its member
        self.pubs = [
            ScriptedPublisher(stack.url, stack.publish_token, ECHO, answer=self._answer)
            for _ in range(count)
        ]

    def _answer(self, task: dict[str, Any], pub: ScriptedPublisher) -> None:
        self.served[task["request"]["messages"][-1]["content"]] = pub.session_id or ""
        echo_answer(task, pub)

    def __enter__(self) -> Members:
        for pub in self.pubs:
            pub.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for pub in self.pubs:
            pub.__exit__(*exc)


def chat(stack: Stack, messages: list[dict[str, Any]], **headers: str) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {stack.client_token}", **headers},
        json={"model": "m", "messages": messages},
        timeout=60,
    )


def pool(stack: Stack) -> dict[str, Any]:
    resp = httpx.get(
        f"{stack.url}/api/v1/llms/m", headers={"Authorization": f"Bearer {stack.client_token}"}
    )
    assert resp.status_code == 200
    view: dict[str, Any] = resp.json()
    return view


@pytest.fixture(params=["server", "lambda"])
def mode_stack(request: pytest.FixtureRequest, moto_server: MotoProcess) -> Iterator[Stack]:
    with running_stack(
        moto_server.endpoint,
        mode=request.param,
        heartbeat_timeout_seconds=60,
        affinity_wait_seconds=5,
        # A continuing turn waits for its member a task's time plus one poll re-check
        # (service.affinity): a re-check long enough that a member of a loaded machine is
        # back at its poll by then. (Server mode tells polls of new tasks at once; in
        # Lambda mode an idle poll looks this often.)
        poll_max_interval_seconds=3 if request.param == "server" else 1,
    ) as stack:
        yield stack


def test_every_turn_of_a_conversation_goes_back_to_its_member(mode_stack: Stack) -> None:
    stack = mode_stack
    with Members(stack, 3) as members:
        wait_until(lambda: len(pool(stack)["members"]) == 3, 30, "the members never joined")
        for turn in range(3):
            for opening in ("w", "x", "y", "z"):
                resp = chat(stack, turns(opening, turn))
                assert resp.status_code == 200, resp.text
        # and one named by its caller, whatever its messages
        for n in range(3):
            named = chat(
                stack, [{"role": "user", "content": f"named {n}"}], **{CONVERSATION_HEADER: "c1"}
            )
            assert named.status_code == 200, named.text
    served = members.served
    for opening in ("w", "x", "y", "z"):
        ran = {served[opening], served[f"{opening} more 0"], served[f"{opening} more 1"]}
        assert len(ran) == 1, (opening, ran)
    assert len({served[f"named {n}"] for n in range(3)}) == 1
    if stack.env["NATRELAY_MODE"] == "server":
        # its polls take turns (without affinity, so would a conversation's turns)
        assert len({served[o] for o in ("w", "x", "y", "z")}) > 1
    # every later turn was meant for its member (found in memory, or in the index in
    # Lambda mode) and taken by it
    view = pool(stack)
    assert view["affinityHits"] == 10 and view["affinityMisses"] == 0, view


def test_a_conversation_whose_member_stays_busy_goes_elsewhere_after_the_wait(
    moto_server: MotoProcess,
) -> None:
    with (
        running_stack(
            moto_server.endpoint, heartbeat_timeout_seconds=60, affinity_wait_seconds=3
        ) as stack,
        Held(stack, ECHO) as busy,
    ):
        first = threading.Thread(target=chat, args=(stack, turns("x", 0)))
        first.start()
        wait_until(lambda: busy.order == ["x"], 30, "its member never took the first turn")
        busy.release.release()
        first.join(30)
        with Members(stack, 1) as other:
            wait_until(lambda: len(pool(stack)["members"]) == 2, 30, "the other never joined")
            second = threading.Thread(target=chat, args=(stack, turns("x", 1)))
            second.start()  # its member takes it, and holds it
            wait_until(lambda: busy.order == ["x", "x more 0"], 30, "its member never took it")
            third = chat(stack, turns("x", 2))
            assert third.status_code == 200, third.text
            assert "x more 1" in other.served  # its member was busy all along
            view = pool(stack)
            assert (view["affinityHits"], view["affinityMisses"]) == (1, 1), view
            busy.release.release()
            second.join(30)
