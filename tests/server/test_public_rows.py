"""Public rows and fallbacks, against a real relay (uvicorn), a fake OpenAI upstream on
127.0.0.1, and the official openai SDK."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from natrelay.service.assembly import Assembly
from natrelay.settings import Settings
from natrelay.store import Stores
from natrelay.wire import SERVED_BY_HEADER, Paths
from natrelay_infra.moto_server import MotoProcess, MotoServer
from tests.support.backend import FakeBackend
from tests.support.net import serve, wait_until
from tests.support.scripted import ScriptedPublisher
from tests.support.stack import Stack, put_secret, running_stack

HI = [{"role": "user", "content": "hi"}]


@dataclass
class Cloud:
    stack: Stack
    backend: FakeBackend
    backend_url: str
    api_key: str
    secret: str
    log: Path

    def apply(self, *docs: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            f"{self.stack.url}{Paths.LLMS_APPLY}",
            headers={"Authorization": f"Bearer {self.stack.admin_token}"},
            json={"documents": list(docs)},
            timeout=30,
        )

    def public(self, name: str, model: str = "m1", **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "kind": "public",
            "baseUrl": f"{self.backend_url}/v1",
            "model": model,
            "apiKey": {"secretsManager": self.secret},
            **extra,
        }

    def client(self, token: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.stack.url}/v1",
            api_key=token or self.stack.client_token,
            max_retries=0,
            timeout=30,
        )

    def sweep(self) -> dict[str, int]:
        """One sweep of the relay's tables, as its sweeper function runs it."""
        saved = dict(os.environ)
        os.environ.update(self.stack.env)
        try:
            settings = Settings()
            return asyncio.run(Assembly(settings, stores=Stores.connect(settings)).sweeper.run())
        finally:
            os.environ.clear()
            os.environ.update(saved)


def _secret(moto: MotoServer, value: str) -> str:
    return put_secret(moto.endpoint, f"natrelay/test-{uuid.uuid4().hex[:8]}", value)


@pytest.fixture
def heartbeat_timeout() -> float:
    """Long: a registered publisher that never polls (a busy one) stays live however slow
    the test (the test of rows without heartbeats shortens it)."""
    return 30


@pytest.fixture
def cloud(moto_server: MotoProcess, tmp_path: Path, heartbeat_timeout: float) -> Iterator[Cloud]:
    key = f"sk-test-{uuid.uuid4().hex}"
    backend = FakeBackend(api_key=key, interval=0.01)
    secret = _secret(moto_server, json.dumps({"apiKey": key}))
    log = tmp_path / "relay.log"
    with (
        serve(backend.app()) as url,
        running_stack(
            moto_server.endpoint,
            log_file=log,
            secrets_endpoint=moto_server.endpoint,
            heartbeat_timeout_seconds=heartbeat_timeout,
            log_level="DEBUG",
        ) as stack,
    ):
        made = Cloud(stack, backend, url, key, secret, log)
        assert made.apply(made.public("cloud")).status_code == 200
        yield made


def _today(cloud: Cloud, token: str) -> dict[str, Any]:
    """The key's usage today (empty: none yet)."""
    days = httpx.get(
        f"{cloud.stack.url}{Paths.USAGE}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()["days"]
    return dict(days[-1]) if days else {}


def _every_answer(cloud: Cloud) -> str:
    """What the relay's GETs answer about rows, to admins and clients."""
    s = cloud.stack
    out = []
    for token in (s.admin_token, s.client_token):
        headers = {"Authorization": f"Bearer {token}"}
        for path in (Paths.LLMS, Paths.LLM.format(name="cloud"), Paths.MODELS, "/v1/models/cloud"):
            out.append(httpx.get(f"{s.url}{path}", headers=headers, timeout=10).text)
    return "\n".join(out)


def test_plain_and_streamed_through_the_openai_sdk(cloud: Cloud) -> None:
    client = cloud.client()
    raw = client.chat.completions.with_raw_response.create(model="cloud", messages=HI)
    assert raw.headers[SERVED_BY_HEADER] == "cloud"
    reply = raw.parse()
    assert reply.model == "cloud"  # the relay's name, not the upstream's model
    assert reply.choices[0].message.content == cloud.backend.text()
    assert cloud.backend.requests[-1]["model"] == "m1"

    stream = client.chat.completions.create(
        model="cloud", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    pieces, usage = [], None
    for chunk in stream:
        assert chunk.model == "cloud"
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "".join(pieces) == cloud.backend.text()
    assert usage is not None and usage.completion_tokens == len(cloud.backend.pieces())
    assert cloud.backend.finished.is_set()

    # usage counts as for published rows: two requests, the tokens of both (an unlimited
    # key's usage is written just after its answer: wait for it)
    token = cloud.stack.client_token
    wait_until(lambda: _today(cloud, token).get("requests") == 2, timeout=10)
    assert _today(cloud, token)["completionTokens"] == 2 * len(cloud.backend.pieces())

    # the key is nowhere: not in any answer, not in the log (at DEBUG)
    assert cloud.api_key not in _every_answer(cloud)
    admin_view = httpx.get(
        f"{cloud.stack.url}{Paths.LLM.format(name='cloud')}",
        headers={"Authorization": f"Bearer {cloud.stack.admin_token}"},
        timeout=10,
    ).json()
    assert admin_view["apiKey"] == {"secretsManager": cloud.secret}
    client_view = httpx.get(
        f"{cloud.stack.url}{Paths.LLM.format(name='cloud')}",
        headers={"Authorization": f"Bearer {cloud.stack.client_token}"},
        timeout=10,
    ).json()
    assert "apiKey" not in client_view and "baseUrl" not in client_view
    log = cloud.log.read_text()
    assert '"route": "/v1/chat/completions"' in log  # the log is there, and holds requests
    assert cloud.api_key not in log


def test_upstream_errors_are_openai_errors_without_the_key(
    cloud: Cloud, moto_server: MotoProcess
) -> None:
    wrong = _secret(moto_server, "sk-wrong-key-123456789")
    applied = cloud.apply(
        cloud.public("bad-request", model="fail-400"),
        cloud.public("broken", model="fail-500"),
        {**cloud.public("wrong-key"), "apiKey": {"secretsManager": wrong}},
        {**cloud.public("slow", model="delay"), "timeoutSeconds": 0.1},
        {**cloud.public("nowhere"), "baseUrl": "http://127.0.0.1:9/v1"},
    )
    assert applied.status_code == 200, applied.text
    client = cloud.client()
    cases = [
        ("bad-request", openai.BadRequestError, "this model does not exist"),
        ("broken", openai.InternalServerError, "failed (500): the GPU caught fire"),
        ("wrong-key", openai.InternalServerError, "refused the relay's API key"),
        ("slow", openai.InternalServerError, "did not answer within 0.1 s"),
        ("nowhere", openai.InternalServerError, "cannot be reached"),
    ]
    for model, error, needle in cases:
        # the fake answers `delay` at once when streamed
        for stream in (False,) if model == "slow" else (False, True):
            with pytest.raises(error) as caught:
                client.chat.completions.create(model=model, messages=HI, stream=stream)
            body = caught.value.response.text
            assert needle in body, (model, body)
            assert "sk-wrong-key" not in body and cloud.api_key not in body
    statuses = {
        model: httpx.post(
            f"{cloud.stack.url}{Paths.CHAT}",
            headers={"Authorization": f"Bearer {cloud.stack.client_token}"},
            json={"model": model, "messages": HI},
            timeout=30,
        )
        for model, _, _ in cases
    }
    assert {m: r.status_code for m, r in statuses.items()} == {
        "bad-request": 400,
        "broken": 502,
        "wrong-key": 502,
        "slow": 504,
        "nowhere": 502,
    }
    assert all(r.json()["error"]["code"] == "upstream_error" for r in statuses.values())
    log = cloud.log.read_text()
    assert "sk-wrong-key" not in log and cloud.api_key not in log


@pytest.mark.parametrize("heartbeat_timeout", [2])
def test_public_rows_stay_active_without_heartbeats(cloud: Cloud, heartbeat_timeout: float) -> None:
    quiet = ScriptedPublisher(
        cloud.stack.url, cloud.stack.publish_token, [{"name": "home", "type": "echo", "model": "e"}]
    )
    quiet.register()  # and never heard of again
    time.sleep(heartbeat_timeout + 0.5)  # past the heartbeat timeout
    for _ in range(2):
        cloud.sweep()
    rows = {
        r["name"]: r["status"]
        for r in httpx.get(
            f"{cloud.stack.url}{Paths.LLMS}",
            headers={"Authorization": f"Bearer {cloud.stack.admin_token}"},
            timeout=10,
        ).json()["data"]
    }
    assert rows == {"cloud": "active", "home": "inactive"}
    reply = cloud.client().chat.completions.create(model="cloud", messages=HI)
    assert reply.choices[0].message.content
    quiet.http.close()


def test_scopes_and_limits_apply_to_public_rows(cloud: Cloud) -> None:
    admin = {"Authorization": f"Bearer {cloud.stack.admin_token}"}

    def key(**spec: Any) -> str:
        made = httpx.post(
            f"{cloud.stack.url}{Paths.KEYS}",
            headers=admin,
            json={"role": "client", "label": "t", **spec},
            timeout=10,
        )
        return str(made.json()["secret"])

    elsewhere = cloud.client(key(models=["home"]))
    with pytest.raises(openai.NotFoundError):
        elsewhere.chat.completions.create(model="cloud", messages=HI)
    once = cloud.client(key(rpm=1))
    once.chat.completions.create(model="cloud", messages=HI)
    with pytest.raises(openai.RateLimitError):
        once.chat.completions.create(model="cloud", messages=HI)
    # one at a time: its slot is free again before its answer goes out
    single = cloud.client(key(concurrency=1))
    for _ in range(5):
        single.chat.completions.create(model="cloud", messages=HI)


def test_fallback_while_the_publisher_is_away(cloud: Cloud) -> None:
    s = cloud.stack
    home = [{"name": "home", "type": "echo", "model": "e"}]
    publisher = ScriptedPublisher(s.url, s.publish_token, home).start()
    applied = cloud.apply({"name": "home", "fallbacks": ["cloud"]})
    assert applied.status_code == 200, applied.text
    client = cloud.client()

    def ask(stream: bool = False) -> tuple[str, str]:
        if stream:
            with client.chat.completions.with_streaming_response.create(
                model="home", messages=HI, stream=True
            ) as resp:
                text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
                return resp.headers[SERVED_BY_HEADER], text
        raw = client.chat.completions.with_raw_response.create(model="home", messages=HI)
        return raw.headers[SERVED_BY_HEADER], raw.parse().choices[0].message.content or ""

    assert ask() == ("home", "hi")
    # the publisher stops (it deregisters, as `natrelay publish` does on SIGTERM)
    session = publisher.session_id
    publisher.stop()
    gone = httpx.post(
        f"{s.url}{Paths.DEREGISTER}",
        headers={"Authorization": f"Bearer {s.publish_token}"},
        json={"providerSessionId": session},
        timeout=10,
    )
    assert gone.status_code == 200
    assert ask() == ("cloud", cloud.backend.text())
    assert ask(stream=True) == ("cloud", cloud.backend.text())
    # a key that may not use the fallback gets the row's own error
    scoped = httpx.post(
        f"{s.url}{Paths.KEYS}",
        headers={"Authorization": f"Bearer {s.admin_token}"},
        json={"role": "client", "label": "home only", "models": ["home"]},
        timeout=10,
    ).json()["secret"]
    with pytest.raises(openai.APIStatusError) as caught:
        cloud.client(scoped).chat.completions.create(model="home", messages=HI)
    assert caught.value.status_code == 503
    # the publisher is back: home serves again
    back = ScriptedPublisher(s.url, s.publish_token, home, session_id=session)
    back.register()  # takes its session back
    back.start()
    try:
        assert ask() == ("home", "hi")
        assert ask(stream=True) == ("home", "hi")
    finally:
        back.stop()


def test_fallback_when_the_pool_queue_is_full(cloud: Cloud) -> None:
    s = cloud.stack
    busy = ScriptedPublisher(
        s.url, s.publish_token, [{"name": "home", "type": "echo", "model": "e"}]
    )
    busy.register()  # it never polls: what is queued for it waits
    applied = cloud.apply({"name": "home", "fallbacks": ["cloud"], "maxQueueDepth": 1})
    assert applied.status_code == 200, applied.text
    queued = httpx.post(
        f"{s.url}{Paths.INFER.format(name='home')}",
        headers={"Authorization": f"Bearer {s.client_token}", "Prefer": "respond-async"},
        json={"messages": HI},
        timeout=10,
    )
    assert queued.status_code == 202
    raw = cloud.client().chat.completions.with_raw_response.create(model="home", messages=HI)
    assert raw.headers[SERVED_BY_HEADER] == "cloud"
    busy.http.close()
    # the console's overview counts it on the row asked for
    login = httpx.post(f"{s.url}{Paths.CONSOLE_LOGIN}", data={"key": s.admin_token})
    assert login.status_code == 303, login.text
    cookie = login.headers["set-cookie"].partition(";")[0]  # Secure: sent by hand on http
    page = httpx.get(f"{s.url}{Paths.CONSOLE}", headers={"Cookie": cookie}, timeout=10).text
    served = re.search(
        r'<tr id="row-home">.*?<td data-label="served by a fallback today"[^>]*>([^<]*)</td>', page
    )
    assert served and served[1] == "1", page


def _wake_fails(task: dict[str, Any], pub: ScriptedPublisher) -> None:
    """A publisher whose backend does not come up: the wake and what waits for it fail."""
    cause = "wake of home failed: POST http://box/wake answered 500"
    pub.result(task["id"], {"status": 503, "error": {"message": cause, "code": "wake_failed"}})


def test_fallback_when_the_wake_fails(cloud: Cloud) -> None:
    s = cloud.stack
    sleepy = [
        {
            "name": "home",
            "type": "echo",
            "model": "e",
            "initialStatus": "hibernating",
            "wakeMaxWaitSeconds": 30,
        }
    ]
    with ScriptedPublisher(s.url, s.publish_token, sleepy, answer=_wake_fails) as publisher:
        applied = cloud.apply({"name": "home", "fallbacks": ["cloud"]})
        assert applied.status_code == 200, applied.text
        client = cloud.client()
        raw = client.chat.completions.with_raw_response.create(model="home", messages=HI)
        assert raw.headers[SERVED_BY_HEADER] == "cloud"
        assert raw.parse().choices[0].message.content == cloud.backend.text()
        with client.chat.completions.with_streaming_response.create(
            model="home", messages=HI, stream=True
        ) as resp:
            assert resp.headers[SERVED_BY_HEADER] == "cloud"
            text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
        assert text == cloud.backend.text()
        kinds = [t["kind"] for t in publisher.seen]
        assert kinds.count("wake") >= 2  # each request tried to wake home first


def test_a_stream_that_began_is_never_switched(cloud: Cloud) -> None:
    applied = cloud.apply(cloud.public("breaking", model="break", fallbacks=["cloud"]))
    assert applied.status_code == 200, applied.text
    before = len(cloud.backend.requests)
    with httpx.stream(
        "POST",
        f"{cloud.stack.url}{Paths.CHAT}",
        headers={"Authorization": f"Bearer {cloud.stack.client_token}"},
        json={"model": "breaking", "messages": HI, "stream": True},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers[SERVED_BY_HEADER] == "breaking"
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    text = "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in map(json.loads, events[:-2])
        if c.get("choices")
    )
    assert text == cloud.backend.text()  # all it sent, then its error: not the fallback's
    assert "out of memory" in events[-2] and events[-1] == "[DONE]"
    assert len(cloud.backend.requests) == before + 1  # the fallback was never called


def test_a_queued_request_falls_back_to_published_rows_only(cloud: Cloud) -> None:
    s = cloud.stack
    busy = ScriptedPublisher(
        s.url, s.publish_token, [{"name": "home", "type": "echo", "model": "e"}]
    )
    busy.register()  # neither polls: what is queued for them waits
    applied = cloud.apply({"name": "home", "fallbacks": ["cloud"], "maxQueueDepth": 1})
    assert applied.status_code == 200, applied.text

    def queue() -> httpx.Response:
        return httpx.post(
            f"{s.url}{Paths.INFER.format(name='home')}",
            headers={"Authorization": f"Bearer {s.client_token}", "Prefer": "respond-async"},
            json={"messages": HI},
            timeout=10,
        )

    first = queue()
    assert first.status_code == 202 and first.headers[SERVED_BY_HEADER] == "home"
    # full, and its only fallback is public (it has no task to queue): home's own error
    full = queue()
    assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full"
    spare = ScriptedPublisher(
        s.url, s.publish_token, [{"name": "spare", "type": "echo", "model": "e"}]
    )
    spare.register()
    applied = cloud.apply({"name": "home", "fallbacks": ["cloud", "spare"]})
    assert applied.status_code == 200, applied.text
    moved = queue()
    assert moved.status_code == 202, moved.text
    assert moved.headers[SERVED_BY_HEADER] == "spare" and moved.json()["llm"] == "spare"
    assert moved.headers["location"] == f"/api/v1/tasks/{moved.json()['id']}"
    busy.http.close()
    spare.http.close()


def test_fallback_when_every_backend_is_down(cloud: Cloud) -> None:
    s = cloud.stack
    down = [{"name": "home", "type": "echo", "model": "e", "initialStatus": "unavailable"}]
    with ScriptedPublisher(s.url, s.publish_token, down):
        applied = cloud.apply({"name": "home", "fallbacks": ["cloud"]})
        assert applied.status_code == 200, applied.text
        raw = cloud.client().chat.completions.with_raw_response.create(model="home", messages=HI)
        assert raw.headers[SERVED_BY_HEADER] == "cloud"
        assert raw.parse().choices[0].message.content == cloud.backend.text()


def _fragments(secret: str, size: int = 8) -> list[str]:
    """Every piece of `secret` `size` characters long: none may reach a client."""
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def test_an_upstream_error_never_carries_the_key_whatever_its_offset(cloud: Cloud) -> None:
    """The upstream quotes the key after the request's `user` field: moving it with the
    length of `user`, the key straddles the relay's 1,000-character cut at every offset."""
    assert cloud.apply(cloud.public("quoting", model="quote")).status_code == 200
    key, cut = cloud.api_key, 1000
    head = len("user ")
    tail = len(" may not use the key ")
    answers = []
    with httpx.Client(
        base_url=cloud.stack.url,
        headers={"Authorization": f"Bearer {cloud.stack.client_token}"},
        timeout=30,
    ) as http:
        for start in range(cut - len(key) - 2, cut + 3):
            user = "u" * (start - head - tail)
            resp = http.post(Paths.CHAT, json={"model": "quoting", "messages": HI, "user": user})
            assert resp.status_code == 400, resp.text
            assert resp.json()["error"]["code"] == "upstream_error"
            answers.append(resp.text)
        leaked = [piece for piece in _fragments(key) if piece in "\n".join(answers)]
        assert not leaked, leaked
        # a streamed answer whose error event quotes the key: redacted too
        with http.stream(
            "POST", Paths.CHAT, json={"model": "quoting", "messages": HI, "stream": True}
        ) as streamed:
            assert streamed.status_code == 200
            text = streamed.read().decode()
        assert '"error"' in text and "[redacted]" in text, text
        assert not [piece for piece in _fragments(key) if piece in text]
    assert not [piece for piece in _fragments(key) if piece in cloud.log.read_text()]


def test_relay_made_upstream_failures_say_not_to_retry(
    cloud: Cloud, moto_server: MotoProcess
) -> None:
    """An upstream that did not answer in time may still be running the request: the
    openai SDK (which retries 5xx twice) must call it once. Nor may a retry help when the
    upstream refused the relay's key; one that could not be reached may be retried."""
    wrong = _secret(moto_server, "sk-wrong-key-123456789")
    applied = cloud.apply(
        {**cloud.public("slow", model="delay"), "timeoutSeconds": 0.1},
        {**cloud.public("wrong-key"), "apiKey": {"secretsManager": wrong}},
        {**cloud.public("nowhere"), "baseUrl": "http://127.0.0.1:9/v1"},
    )
    assert applied.status_code == 200, applied.text
    retrying = openai.OpenAI(
        base_url=f"{cloud.stack.url}/v1", api_key=cloud.stack.client_token, max_retries=2
    )
    before = len(cloud.backend.requests)
    with pytest.raises(openai.InternalServerError) as caught:
        retrying.chat.completions.create(model="slow", messages=HI)
    assert caught.value.status_code == 504
    assert len(cloud.backend.requests) == before + 1  # reached once, not three times
    said = {
        model: httpx.post(
            f"{cloud.stack.url}{Paths.CHAT}",
            headers={"Authorization": f"Bearer {cloud.stack.client_token}"},
            json={"model": model, "messages": HI},
            timeout=30,
        ).headers.get("x-should-retry")
        for model in ("slow", "wrong-key", "nowhere")
    }
    assert said == {"slow": "false", "wrong-key": "false", "nowhere": None}


def test_a_public_stream_is_counted_though_the_client_did_not_ask_for_usage(
    cloud: Cloud,
) -> None:
    """Public rows are what an operator pays for: the relay asks the upstream for a
    stream's usage whatever the client asked, and shows it only to a client that did."""
    admin = {"Authorization": f"Bearer {cloud.stack.admin_token}"}
    made = httpx.post(
        f"{cloud.stack.url}{Paths.KEYS}",
        headers=admin,
        json={"role": "client", "label": "streams"},
        timeout=10,
    ).json()
    with httpx.stream(
        "POST",
        f"{cloud.stack.url}{Paths.CHAT}",
        headers={"Authorization": f"Bearer {made['secret']}"},
        json={"model": "cloud", "messages": HI, "stream": True},
        timeout=30,
    ) as resp:
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert cloud.backend.requests[-1]["stream_options"] == {"include_usage": True}
    assert not [e for e in events if '"usage"' in e], events
    assert events[-1] == "data: [DONE]"

    wait_until(lambda: _today(cloud, made["secret"]).get("requests") == 1, timeout=10)
    today = _today(cloud, made["secret"])
    assert today["completionTokens"] == len(cloud.backend.pieces())
    assert today["promptTokens"] == cloud.backend.prompt_tokens
