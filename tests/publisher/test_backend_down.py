"""A backend that is not answering says why, in the publisher's own log at INFO/WARNING
(the user's machine: its URL may be shown there, never its credentials, and never to
clients): the usual misconfigurations name their fix."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.publisher.running import publisher_config, start_publisher, wait_rows
from tests.support.backend import FakeBackend
from tests.support.net import serve
from tests.support.stack import Stack


@pytest.mark.parametrize(
    ("kind", "path", "says"),
    [
        (
            "openai",
            "",  # baseUrl without /v1
            "/models answered 404 Not Found: an OpenAI-compatible baseUrl ends in /v1",
        ),
        (
            "ollama",
            "/v1",  # an OpenAI server given as Ollama
            "/api/tags answered 404 Not Found: not Ollama's native API",
        ),
    ],
)
def test_a_misconfigured_backend_says_what_is_wrong(
    stack: Stack, tmp_path: Path, kind: str, path: str, says: str
) -> None:
    with serve(FakeBackend().app()) as url:
        host = url.removeprefix("http://")
        base = f"http://user:hunter2@{host}{path}"
        provider = {"name": "wrong", "type": kind, "model": "m1", "baseUrl": base}
        publisher = start_publisher(publisher_config(stack, tmp_path, [provider]), tmp_path)
        try:
            wait_rows(stack, {"wrong": "unavailable"})
            publisher.wait_log("backend of wrong is not answering (GET http://")
            refused = httpx.post(
                f"{stack.url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {stack.client_token}"},
                json={"model": "wrong", "messages": [{"role": "user", "content": "hi"}]},
            )
        finally:
            publisher.stop()
    log = publisher.log()
    assert f"is not answering (GET http://{host}{path}{says}" in log, log
    assert "hunter2" not in log
    assert refused.status_code == 503
    # (the message: the answer's random request id may hold "404")
    assert host not in refused.text and "404" not in refused.json()["error"]["message"]
