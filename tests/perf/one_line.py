"""From `natrelay publish --detect` to the first answer through the relay, on this machine.

`python -m tests.perf.one_line [--runs N] [--doorbell]` starts `natrelay dev` (the relay
on its embedded DynamoDB) and a fake Ollama (native API) on a free port, then N times:
runs `natrelay publish --detect --relay … --token …` (NATRELAY_DETECT_PORTS names the
fake's port and the usual ones) with a fresh session file, and asks the relay for the
Ollama's model with the `openai` SDK until it answers. It prints the seconds from starting
the command to that first answer (interpreter start, imports, probing, registration, the
first poll and the request itself), each run and their median. A figure, not a test.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

from natrelay_infra.children import die_with_parent, stop_child
from natrelay_infra.dev import DEV_CLIENT_TOKEN, DEV_PUBLISH_TOKEN
from natrelay_publisher.detect import USUAL_PORTS
from tests.publisher.fakes import ollama_app
from tests.support.backend import FakeBackend
from tests.support.net import free_port, serve, wait_http

NATRELAY = [sys.executable, "-m", "natrelay_cli"]
GIVE_UP_SECONDS = 60.0


def first_answer(url: str) -> None:
    """Ask for `llama3` until the relay serves it (404 or 503 until it is published)."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=DEV_CLIENT_TOKEN, max_retries=0)
    deadline = time.monotonic() + GIVE_UP_SECONDS
    while True:
        try:
            client.chat.completions.create(
                model="llama3", messages=[{"role": "user", "content": "hello"}]
            )
            return
        except (openai.NotFoundError, openai.APIStatusError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no answer within {GIVE_UP_SECONDS:g} s: {exc}") from exc
            time.sleep(0.02)


def one_run(url: str, ports: str, workdir: Path, run: int) -> float:
    env = {**os.environ, "NATRELAY_DETECT_PORTS": ports}
    command = [*NATRELAY, "publish", "--detect", "--relay", url, "--token", DEV_PUBLISH_TOKEN]
    command += ["--session-file", str(workdir / f"session-{run}.json")]
    with (workdir / f"publish-{run}.log").open("wb") as log:
        started = time.monotonic()
        publisher = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - an async-signal-safe prctl
        )
        try:
            first_answer(url)
            seconds = time.monotonic() - started
        finally:
            publisher.send_signal(signal.SIGTERM)
            stop_child(publisher, timeout=30)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--doorbell", action="store_true", help="natrelay dev --doorbell")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="natrelay-one-line-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dev_args = [*NATRELAY, "dev", "--port", str(port), "--log-level", "warning"]
    dev_args += ["--doorbell"] if args.doorbell else []
    with (
        (workdir / "dev.log").open("wb") as log,
        serve(ollama_app(FakeBackend(), ["llama3:latest"])) as ollama,
    ):
        dev = subprocess.Popen(
            dev_args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - an async-signal-safe prctl
        )
        try:
            wait_http(f"{url}/healthz", 60, lambda: dev.poll() is None)
            ports = ",".join([ollama.rsplit(":", 1)[1], *map(str, USUAL_PORTS)])
            times = []
            for run in range(args.runs):
                seconds = one_run(url, ports, workdir, run)
                times.append(seconds)
                print(f"run {run + 1}: {seconds:.2f} s from the command to the first answer")
        finally:
            stop_child(dev, timeout=30)
    mode = "doorbell" if args.doorbell else "long-poll"
    print(
        f"natrelay publish --detect -> first answer ({mode}, {args.runs} runs): median "
        f"{statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s"
    )
    print(f"logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
