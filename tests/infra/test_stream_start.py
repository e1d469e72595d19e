"""functions/stream/run.sh (StreamFunction's start script) serves the relay on $PORT."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from natrelay_infra.children import stop_child
from natrelay_infra.moto_server import MotoProcess
from tests.support.net import free_port, wait_http
from tests.support.scripted import ScriptedPublisher
from tests.support.stack import PUBLISH_TOKEN, fresh_tables, relay_env

RUN_SH = Path(__file__).resolve().parents[2] / "functions" / "stream" / "run.sh"


@pytest.fixture
def stream_app(moto_server: MotoProcess) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    env = relay_env(moto_server.endpoint, fresh_tables(moto_server.endpoint))
    # The script runs `python` from PATH, as on Lambda: make it this interpreter.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    process = subprocess.Popen(
        [str(RUN_SH)],
        env={**os.environ, **env, "PORT": str(port), "PATH": path},
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz")
        yield url, env
    finally:
        stop_child(process, timeout=10)


def test_run_sh_is_executable() -> None:
    assert RUN_SH.stat().st_mode & stat.S_IXUSR
    assert RUN_SH.read_text(encoding="utf-8").startswith("#!/bin/bash\n")


def test_streamed_chat_is_an_event_stream(stream_app: tuple[str, dict[str, str]]) -> None:
    url, env = stream_app
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    providers = [{"name": "echo", "type": "echo", "model": "echo"}]
    with ScriptedPublisher(url, PUBLISH_TOKEN, providers):
        body = {
            "model": "echo",
            "stream": True,
            "messages": [{"role": "user", "content": "streamed through the adapter"}],
        }
        headers = {"Authorization": f"Bearer {env['NATRELAY_CLIENT_TOKEN']}"}
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert len(events) > 2
