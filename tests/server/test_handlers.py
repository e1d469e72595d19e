"""The Lambda handlers, called with real event shapes (tests/events, from `sam local
generate-event`): API Gateway HTTP API v2 through Mangum, and the EventBridge schedule."""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from natrelay_infra.moto_server import MotoProcess
from tests.support.scripted import ScriptedPublisher
from tests.support.stack import (
    CLIENT_TOKEN,
    PUBLISH_TOKEN,
    fresh_tables,
    relay_env,
    start_api,
)

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"


def load_handler(function: str, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> ModuleType:
    """Import functions/<function>/app.py the way Lambda does, with the function's env."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location(
        f"{function}_app", ROOT / "functions" / function / "app.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def http_event(
    method: str, path: str, token: str | None = None, body: Any = None
) -> dict[str, Any]:
    event: dict[str, Any] = copy.deepcopy(json.loads((EVENTS / "http-api-v2.json").read_text()))
    event["rawPath"] = path
    event["rawQueryString"] = ""
    event.pop("queryStringParameters", None)
    event.pop("cookies", None)
    event["requestContext"]["http"].update(method=method, path=path)
    event["headers"] = {"content-type": "application/json", "host": "api.example.com"}
    if token:
        event["headers"]["authorization"] = f"Bearer {token}"
    if body is None:
        event.pop("body", None)
        event["isBase64Encoded"] = False
    else:
        event["body"] = base64.b64encode(json.dumps(body).encode()).decode()
        event["isBase64Encoded"] = True
    return event


def register_event() -> dict[str, Any]:
    """A publisher registering one echo model named `a`."""
    return http_event(
        "POST",
        "/api/v1/llms/_provider-register",
        PUBLISH_TOKEN,
        {"providers": [{"name": "a", "type": "echo", "model": "m"}]},
    )


def body_of(response: dict[str, Any]) -> str:
    raw = response.get("body") or ""
    return base64.b64decode(raw).decode() if response.get("isBase64Encoded") else raw


@pytest.fixture
def heartbeat_timeout() -> float:
    """Long: a publisher busy on a loaded machine is not taken for gone (the sweeper's
    test shortens it)."""
    return 30


@pytest.fixture
def relay(
    moto_server: MotoProcess, monkeypatch: pytest.MonkeyPatch, heartbeat_timeout: float
) -> Any:
    """The api handler, and a uvicorn API on the same tables for the publisher to poll."""
    tables = fresh_tables(moto_server.endpoint)
    env = relay_env(
        moto_server.endpoint,
        tables,
        mode="lambda",
        heartbeat_timeout_seconds=heartbeat_timeout,
    )
    api = start_api(env)
    try:
        yield load_handler("api", monkeypatch, env), api, env
    finally:
        api.stop()


def test_api_handler_serves_health_errors_and_registration(relay: Any) -> None:
    handler, _, _ = relay
    assert handler.handler(http_event("GET", "/healthz"), None)["statusCode"] == 200
    resp = handler.handler(http_event("GET", "/v1/models"), None)
    assert resp["statusCode"] == 401 and json.loads(body_of(resp))["error"]["code"]
    resp = handler.handler(register_event(), None)
    assert resp["statusCode"] == 200
    assert json.loads(body_of(resp))["llms"][0]["name"] == "a"
    resp = handler.handler(
        http_event(
            "POST",
            "/v1/chat/completions",
            CLIENT_TOKEN,
            {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
        ),
        None,
    )
    assert resp["statusCode"] == 404


def test_api_handler_relays_plain_and_streamed_chat(relay: Any) -> None:
    handler, api, _ = relay
    chat = {"model": "echo", "messages": [{"role": "user", "content": "one two three"}]}
    with ScriptedPublisher(
        api.url, PUBLISH_TOKEN, [{"name": "echo", "type": "echo", "model": "echo"}]
    ):
        resp = handler.handler(http_event("POST", "/v1/chat/completions", CLIENT_TOKEN, chat), None)
        assert resp["statusCode"] == 200
        assert json.loads(body_of(resp))["choices"][0]["message"]["content"] == "one two three"
        # Mangum buffers: a streaming request still gets a complete, valid SSE body
        resp = handler.handler(
            http_event("POST", "/v1/chat/completions", CLIENT_TOKEN, {**chat, "stream": True}), None
        )
    assert resp["statusCode"] == 200
    assert resp["headers"]["content-type"].startswith("text/event-stream")
    events = [e for e in body_of(resp).split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    text = "".join(json.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:-1])
    assert text == "one two three"


@pytest.mark.parametrize("heartbeat_timeout", [3])
def test_sweeper_handler_marks_stale_rows_inactive(
    relay: Any, monkeypatch: pytest.MonkeyPatch, heartbeat_timeout: float
) -> None:
    handler, _, env = relay
    resp = handler.handler(register_event(), None)
    assert resp["statusCode"] == 200
    sweeper = load_handler("sweeper", monkeypatch, env)
    event = json.loads((EVENTS / "scheduled.json").read_text())
    assert sweeper.handler(event, None)["inactive"] == 0
    time.sleep(heartbeat_timeout + 0.2)
    counts = sweeper.handler(event, None)
    assert counts["inactive"] == 1
    row = handler.handler(http_event("GET", "/api/v1/llms/a", CLIENT_TOKEN), None)
    assert json.loads(body_of(row))["status"] == "inactive"
