"""Priority classes on a real relay (uvicorn + moto): a key's class, a request lowering
it, interactive work before batch work in a pool's queue, and batch work aging."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from natrelay.wire import PRIORITY_HEADER, Paths
from natrelay_infra.moto_server import MotoProcess
from tests.server.test_pools import Held, pending
from tests.support.net import wait_until
from tests.support.stack import Stack, running_stack

ECHO = [{"name": "m", "type": "echo", "model": "m"}]


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def new_key(stack: Stack, **spec: str) -> str:
    resp = httpx.post(f"{stack.url}/api/v1/keys", headers=auth(stack.admin_token), json=spec)
    assert resp.status_code == 201, resp.text
    assert resp.json()["priority"] == spec.get("priority", "interactive")
    secret: str = resp.json()["secret"]
    return secret


def batch_key(stack: Stack) -> str:
    return new_key(stack, role="client", label="nightly", priority="batch")


def console_overview(stack: Stack) -> str:
    """The console's overview, as an admin logged in sees it."""
    admin = new_key(stack, role="admin", label="ops")
    with httpx.Client(base_url=stack.url, timeout=10, follow_redirects=False) as browser:
        logged = browser.post(Paths.CONSOLE_LOGIN, data={"key": admin})
        assert logged.status_code == 303, logged.text
        page = browser.get(Paths.CONSOLE)
        assert page.status_code == 200
        return page.text


def chat(stack: Stack, token: str, text: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/chat/completions",
        headers=auth(token, **headers),
        json={"model": "m", "messages": [{"role": "user", "content": text}]},
        timeout=60,
    )


class Asking:
    """Requests sent one after another, each once the one before waits in the queue."""

    def __init__(self, stack: Stack, member: Held) -> None:
        self.stack = stack
        self.member = member
        self.answers: dict[str, httpx.Response] = {}
        self.threads: list[threading.Thread] = []

    def ask(self, token: str, text: str, **headers: str) -> None:
        def run() -> None:
            self.answers[text] = chat(self.stack, token, text, **headers)

        queued = pending(self.stack)
        self.threads.append(threading.Thread(target=run))
        self.threads[-1].start()
        if not self.member.order:
            wait_until(lambda: bool(self.member.order), 30, "the member never took one")
        else:
            wait_until(lambda: pending(self.stack) == queued + 1, 30, f"{text} never queued")

    def finish(self) -> None:
        for _ in self.threads:
            self.member.release.release()
        for t in self.threads:
            t.join(30)
        assert {t: a.status_code for t, a in self.answers.items()} == dict.fromkeys(
            self.answers, 200
        )


@pytest.fixture
def classes_stack(moto_server: MotoProcess) -> Iterator[Stack]:
    # (plain http here: the console's cookie may not be Secure)
    with running_stack(
        moto_server.endpoint, heartbeat_timeout_seconds=60, cookie_secure=False
    ) as stack:
        yield stack


def test_interactive_work_goes_before_batch_work_and_a_request_may_only_lower_its_class(
    classes_stack: Stack,
) -> None:
    stack = classes_stack
    nightly = batch_key(stack)
    # a batch key's request cannot raise its class; an unknown class is refused
    raised = chat(stack, nightly, "x", **{PRIORITY_HEADER: "interactive"})
    assert raised.status_code == 400, raised.text
    assert raised.json()["error"]["param"] == PRIORITY_HEADER
    unknown = chat(stack, stack.client_token, "x", **{PRIORITY_HEADER: "urgent"})
    assert unknown.status_code == 400 and "interactive, batch" in unknown.json()["error"]["message"]
    with Held(stack, ECHO) as member:
        asking = Asking(stack, member)
        asking.ask(stack.client_token, "busy")
        queued = httpx.post(
            f"{stack.url}/api/v1/llms/m/infer",
            headers=auth(nightly, Prefer="respond-async"),
            json={"messages": [{"role": "user", "content": "b0"}]},
        )
        assert queued.status_code == 202, queued.text
        location = f"{stack.url}{queued.headers['location']}"
        wait_until(lambda: pending(stack) == 1, 30, "b0 never queued")
        asking.ask(nightly, "b1")
        asking.ask(stack.client_token, "i0")
        asking.ask(stack.client_token, "lowered", **{PRIORITY_HEADER: "batch"})
        asking.ask(stack.client_token, "i1")
        view = httpx.get(location, headers=auth(nightly)).json()
        # i0 and i1 go first: two ahead of b0, although they came after it
        assert view["priority"] == "batch" and view["queuePosition"] == 2, view
        pool = httpx.get(f"{stack.url}/api/v1/llms/m", headers=auth(stack.client_token)).json()
        classes = {c["priority"]: c for c in pool["queueClasses"]}
        assert classes["interactive"]["depth"] == 2 and classes["batch"]["depth"] == 3, pool
        assert (
            classes["batch"]["oldestQueuedSeconds"] >= classes["interactive"]["oldestQueuedSeconds"]
        )
        page = console_overview(stack)
        assert "interactive&nbsp;waiting" in page and "batch&nbsp;waiting" in page
        assert ">2 (up to " in page and ">3 (up to " in page
        member.release.release()  # b0's turn comes after the interactive ones
        asking.finish()
    assert member.order == ["busy", "i0", "i1", "b0", "b1", "lowered"]


def test_batch_work_that_waited_its_aging_time_goes_before_newer_interactive_work(
    moto_server: MotoProcess,
) -> None:
    with (
        running_stack(
            moto_server.endpoint, heartbeat_timeout_seconds=60, batch_aging_seconds=1
        ) as stack,
        Held(stack, ECHO) as member,
    ):
        nightly = batch_key(stack)
        asking = Asking(stack, member)
        asking.ask(stack.client_token, "busy")
        asking.ask(nightly, "old-batch")
        time.sleep(1.2)  # its aging time passes: it now sorts before anything newer
        asking.ask(stack.client_token, "new-interactive")
        asking.ask(nightly, "new-batch")
        asking.finish()
    assert member.order == ["busy", "old-batch", "new-interactive", "new-batch"]
