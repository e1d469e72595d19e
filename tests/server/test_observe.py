"""Operating the relay: request ids in headers, bodies and JSON log lines; Prometheus
metrics in long-lived mode; CloudWatch EMF from the Lambda handler."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from natrelay.observe import configure_logging
from natrelay.service.assembly import build_relay
from natrelay.settings import Settings
from natrelay.web import create_app
from natrelay.web.middleware import log_level
from natrelay.wire import Paths
from natrelay_infra.moto_server import MotoProcess
from natrelay_infra.relay_config import relay_settings
from tests.server.test_handlers import http_event, load_handler
from tests.support.net import serve
from tests.support.scripted import ScriptedPublisher
from tests.support.stack import (
    ADMIN_TOKEN,
    CLIENT_TOKEN,
    FAKE_AWS,
    fresh_tables,
    relay_env,
    running_stack,
)

ECHO = [{"name": "echo", "type": "echo", "model": "echo"}]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_every_response_names_its_request_and_so_does_its_log_line(
    moto_server: MotoProcess, tmp_path: Path
) -> None:
    log = tmp_path / "relay.log"
    with running_stack(moto_server.endpoint, log_file=log) as stack:
        answers = {
            "health": httpx.get(f"{stack.url}/healthz"),
            "models": httpx.get(f"{stack.url}/v1/models", headers=auth(stack.client_token)),
            "unknown": httpx.post(
                f"{stack.url}/v1/chat/completions",
                headers=auth(stack.client_token),
                json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
            ),
            "no route": httpx.get(f"{stack.url}/v2/nothing"),
            "no key": httpx.get(f"{stack.url}/v1/models"),
        }
    ids = {name: resp.headers["x-request-id"] for name, resp in answers.items()}
    assert len(set(ids.values())) == len(ids)
    for name in ("unknown", "no route", "no key"):
        assert answers[name].json()["error"]["request_id"] == ids[name]
    lines = {
        rec["requestId"]: rec
        for rec in json_lines(log.read_text())
        if rec.get("message") == "request"
    }
    for name, resp in answers.items():
        rec = lines[ids[name]]
        assert rec["status"] == resp.status_code and rec["durationMs"] >= 0
        assert rec["level"] == "INFO" and rec["time"]
    assert lines[ids["models"]]["route"] == "/v1/models"
    assert lines[ids["models"]]["keyId"] == "static-client"
    assert lines[ids["unknown"]]["model"] == "nope"
    assert lines[ids["unknown"]]["errorCode"] == "model_not_found"
    text = log.read_text()
    assert CLIENT_TOKEN not in text and ADMIN_TOKEN not in text


def _settings(moto_server: MotoProcess, monkeypatch: pytest.MonkeyPatch, **fields: Any) -> Settings:
    """A relay in this process, on fresh tables of the shared moto server."""
    for key, value in FAKE_AWS.items():
        monkeypatch.setenv(key, value)
    return relay_settings(
        moto_server.endpoint,
        fresh_tables(moto_server.endpoint),
        client_token=CLIENT_TOKEN,
        publish_token="p" * 20,
        **fields,
    )


def test_a_500_is_one_json_line_with_the_trace_and_the_client_gets_only_the_id(
    moto_server: MotoProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(moto_server, monkeypatch)
    relay = build_relay(settings)

    async def broken(*args: Any) -> Any:
        raise RuntimeError("boom: a bug with a secret inside")

    monkeypatch.setattr(relay.catalog, "serving_rows", broken)
    app = create_app(settings, relay)
    out = io.StringIO()
    configure_logging("json", "INFO", stream=out)
    try:
        with serve(app) as url:
            resp = httpx.get(f"{url}/v1/models", headers=auth(CLIENT_TOKEN))
    finally:
        configure_logging("text", "WARNING", stream=io.StringIO())
        logging.getLogger().handlers[:] = [
            h for h in logging.getLogger().handlers if not getattr(h, "natrelay", False)
        ]
    assert resp.status_code == 500
    rid = resp.headers["x-request-id"]
    error = resp.json()["error"]
    assert error["request_id"] == rid and error["code"] == "internal_error"
    assert "boom" not in resp.text and "Traceback" not in resp.text
    records = [r for r in json_lines(out.getvalue()) if r.get("requestId") == rid]
    failures = [r for r in records if r["level"] == "ERROR"]
    assert len(failures) == 1
    assert "RuntimeError: boom" in failures[0]["exc_info"]
    assert [r["status"] for r in records if r.get("message") == "request"] == [500]


def test_text_lines_say_what_each_request_was(
    moto_server: MotoProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(_settings(moto_server, monkeypatch, log_format="text"))
    out = io.StringIO()
    configure_logging("text", "INFO", stream=out)
    try:
        with serve(app) as url:
            models = httpx.get(f"{url}/v1/models", headers=auth(CLIENT_TOKEN))
            unknown = httpx.post(
                f"{url}/v1/chat/completions",
                headers=auth(CLIENT_TOKEN),
                json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
            )
    finally:
        logging.getLogger().handlers[:] = [
            h for h in logging.getLogger().handlers if not getattr(h, "natrelay", False)
        ]
    lines = out.getvalue().splitlines()
    rid, failed = models.headers["x-request-id"], unknown.headers["x-request-id"]
    assert any(
        line.startswith("INFO      GET /v1/models -> 200 in ")
        and line.endswith(f" ms (key static-client, request {rid})")
        for line in lines
    ), lines
    assert any(
        line.startswith("INFO      POST /v1/chat/completions -> 404 in ")
        and line.endswith(
            f"(error model_not_found, model nope, key static-client, request {failed})"
        )
        for line in lines
    ), lines
    assert "INFO      request" not in lines


def _wake_and_answer(task: dict[str, Any], pub: ScriptedPublisher) -> None:
    if task["kind"] == "wake":
        pub.result(task["id"], {"status": 200, "body": {"ok": True, "ms": 5}})
        return
    body = {"object": "chat.completion", "choices": [{"index": 0, "message": {"content": "up"}}]}
    pub.result(task["id"], {"status": 200, "body": body})


def test_metrics_count_requests_errors_and_wakes(moto_server: MotoProcess) -> None:
    sleepy = [{**ECHO[0], "initialStatus": "hibernating", "wakeMaxWaitSeconds": 30}]
    with (
        running_stack(
            moto_server.endpoint, metrics="prometheus", metrics_token="scrape-me-0123456789"
        ) as stack,
        ScriptedPublisher(stack.url, stack.publish_token, sleepy, answer=_wake_and_answer),
    ):
        chat = {"model": "echo", "messages": [{"role": "user", "content": "wake"}]}
        url = f"{stack.url}/v1/chat/completions"
        assert httpx.post(url, headers=auth(stack.client_token), json=chat, timeout=30).is_success
        missing = httpx.post(url, headers=auth(stack.client_token), json={**chat, "model": "x"})
        assert missing.status_code == 404
        # who may read them: the metrics token or an admin, nobody else
        assert (
            httpx.get(f"{stack.url}/metrics", headers=auth(stack.client_token)).status_code == 403
        )
        assert httpx.get(f"{stack.url}/metrics").status_code == 401
        by_token = httpx.get(f"{stack.url}/metrics", headers=auth("scrape-me-0123456789"))
        text = httpx.get(f"{stack.url}/metrics", headers=auth(stack.admin_token)).text
    assert by_token.status_code == 200
    assert 'natrelay_requests_total{route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'natrelay_requests_total{route="/v1/chat/completions",status="404"} 1.0' in text
    assert 'natrelay_errors_total{code="model_not_found"} 1.0' in text
    assert 'natrelay_wakes_total{outcome="started"} 1.0' in text
    assert 'natrelay_wakes_total{outcome="succeeded"} 1.0' in text
    assert "natrelay_added_latency_seconds_count 1.0" in text


def test_the_lambda_handler_writes_valid_emf(
    moto_server: MotoProcess, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = relay_env(moto_server.endpoint, fresh_tables(moto_server.endpoint), metrics="emf")
    api = load_handler("api", monkeypatch, env)
    capsys.readouterr()
    answer = api.handler(http_event("GET", "/v1/models", CLIENT_TOKEN), _Context())
    assert answer["statusCode"] == 200
    assert answer["headers"]["x-request-id"]
    blobs = [b for b in json_lines(capsys.readouterr().out) if "_aws" in b]
    assert blobs, "no EMF output"
    names = set()
    for blob in blobs:
        meta = blob["_aws"]
        assert isinstance(meta["Timestamp"], int)
        for directive in meta["CloudWatchMetrics"]:
            assert directive["Namespace"] == "natrelay"
            for dims in directive["Dimensions"]:
                assert all(d in blob for d in dims)
            for metric in directive["Metrics"]:
                assert metric["Name"] in blob and metric["Unit"]
                names.add(metric["Name"])
    assert {"Requests", "RequestDuration"} <= names


class _Context:
    aws_request_id = "lambda-request-0001"
    function_name = "natrelay-api"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:natrelay-api"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def test_settings_reject_an_unknown_metrics_sink() -> None:
    with pytest.raises(ValueError, match="metrics"):
        Settings(metrics="statsd")  # type: ignore[arg-type]


def test_the_publishers_plumbing_logs_at_debug_unless_it_fails() -> None:
    """A poll, a heartbeat, a claim and a task's posts run for every inference: their
    line is DEBUG when they succeed, INFO when they do not; every other route is INFO."""
    task = Paths.TASK_RESULT.format(task_id="t1")
    for path in (Paths.POLL, Paths.CLAIM, Paths.HEARTBEAT, task, f"{task[:-6]}chunks"):
        assert log_level(path, 200) == logging.DEBUG, path
        assert log_level(path, 403) == logging.INFO, path
    for path in (Paths.REGISTER, Paths.DEREGISTER, "/v1/chat/completions", Paths.LLMS):
        assert log_level(path, 200) == logging.INFO, path
