"""`natrelay dev`: its parts, and the whole of it as a user runs it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from natrelay_infra.children import stop_child
from natrelay_infra.demo import DEMO_MODELS, demo_config, write_config
from natrelay_infra.dev import DEV_ADMIN_TOKEN, DEV_CLIENT_TOKEN
from natrelay_infra.moto_server import MotoProcess
from natrelay_infra.tables import TableNames
from natrelay_infra.wake_controller import WakeController
from tests.support.net import free_port, wait_http, wait_until
from tests.support.stack import dynamodb_client

MSG = [{"role": "user", "content": "hello from the relay"}]


# --- the parts -------------------------------------------------------------------------


def test_wake_controller_is_ready_only_after_a_wake() -> None:
    with WakeController(wake_delay=0.3) as controller:
        assert controller.url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{controller.url}/ready").status_code == 503
        assert httpx.post(f"{controller.url}/wake").status_code == 202
        assert httpx.get(f"{controller.url}/ready").status_code == 503  # still waking
        wait_until(lambda: httpx.get(f"{controller.url}/ready").status_code == 200, 5, "not awake")
        assert httpx.post(f"{controller.url}/sleep").status_code == 200
        assert httpx.get(f"{controller.url}/ready").status_code == 503
        assert httpx.get(f"{controller.url}/nope").status_code == 404


def test_demo_config_is_a_valid_publisher_config(tmp_path: Path) -> None:
    config_module = pytest.importorskip("natrelay_publisher.config")
    data = demo_config(
        "http://127.0.0.1:8787",
        "dev-publish-token",
        tmp_path,
        "http://127.0.0.1:9999",
        heartbeat_timeout=90,
    )
    path = write_config(data, tmp_path / "publisher.yaml")
    assert path.stat().st_mode & 0o077 == 0
    config = config_module.load_config(path)
    assert [p.name for p in config.providers] == list(DEMO_MODELS)
    sleepy = config.providers[1]
    assert sleepy.options["availabilityUrl"] == "http://127.0.0.1:9999/ready"
    assert sleepy.wake is not None


# --- the whole command -----------------------------------------------------------------


def _natrelay() -> list[str]:
    """The `natrelay` console script of this environment (or the same CLI through -m)."""
    script = Path(sys.executable).parent / "natrelay"
    return [str(script)] if script.exists() else [sys.executable, "-m", "natrelay_publisher"]


@dataclass
class Dev:
    process: subprocess.Popen[bytes]
    output: Path
    pid_file: Path

    def text(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        def seen() -> re.Match[str] | None:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"natrelay dev exited ({self.process.returncode}):\n{self.text()}"
                )
            return re.search(pattern, self.text(), re.MULTILINE)

        try:
            match = wait_until(seen, timeout, f"no {pattern!r} in the output", interval=0.1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; natrelay dev said:\n{self.text()}") from None
        return match

    publisher: int | None = None

    @property
    def url(self) -> str:
        """The relay's URL as `natrelay dev` reports it (it picked a free port itself)."""
        return self.wait_for(r"relay API at (http://127\.0\.0\.1:\d+)$")[1]

    def publisher_pid(self) -> int:
        self.wait_for(r"^publisher pid: \d+")
        self.publisher = int(self.pid_file.read_text())
        return self.publisher

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=timeout)


@contextmanager
def natrelay_dev(tmp_path: Path, *args: str) -> Iterator[Dev]:
    output = tmp_path / "dev.log"
    pid_file = tmp_path / "publisher.pid"
    if not {"--state-dir", "--ephemeral", "--dynamodb-endpoint"} & set(args):
        args = ("--ephemeral", *args)  # never the user's own state directory
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATRELAY_")}
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [*_natrelay(), "dev", "--port", "0", "--pid-file", str(pid_file), *args],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group, so nothing can outlive the test
        )
    dev = Dev(process=process, output=output, pid_file=pid_file)
    try:
        yield dev
    finally:
        stop_child(process, timeout=30)
        # Anything left behind is a bug, and must not outlive the test either way.
        leftover = []
        try:
            os.killpg(process.pid, signal.SIGKILL)
            leftover.append("its process group")
        except ProcessLookupError:
            pass
        if dev.publisher is not None and not _gone_within(dev.publisher, 15):
            os.kill(dev.publisher, signal.SIGKILL)
            leftover.append(f"the publisher {dev.publisher}")
        assert not leftover, f"natrelay dev left {leftover} behind:\n{dev.text()}"


def admin_cli(dev: Dev, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`natrelay ARGS` against the running relay, with its admin token."""
    env = {"NATRELAY_URL": dev.url, "NATRELAY_ADMIN_TOKEN": DEV_ADMIN_TOKEN, "PATH": "/usr/bin"}
    return subprocess.run(
        [*_natrelay(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def _openai(dev: Dev) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{dev.url}/v1", api_key=DEV_CLIENT_TOKEN, max_retries=0, timeout=30
    )


def _row_status(dev: Dev, name: str) -> str:
    match = dev.wait_for(r"DynamoDB:\s+(\S+) \(tables ([^,\s]+), ")
    client = dynamodb_client(match[1])
    item = client.get_item(TableName=match[2], Key={"name": {"S": name}})["Item"]
    return str(item["status"]["S"])


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _gone_within(pid: int, timeout: float) -> bool:
    try:
        return wait_until(lambda: _process_gone(pid), timeout, interval=0.1)
    except TimeoutError:
        return False


@pytest.mark.slow
def test_demo_end_to_end_with_the_openai_client(tmp_path: Path) -> None:
    with natrelay_dev(
        tmp_path, "--demo", "--heartbeat-timeout", "3", "--sweep-interval", "0.5"
    ) as dev:
        dev.wait_for(r"^demo ready")
        oai = _openai(dev)

        assert {"echo", "echo-sleepy"} <= {m.id for m in oai.models.list()}
        reply = oai.chat.completions.create(model="echo", messages=MSG)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == "hello from the relay"
        stream = oai.chat.completions.create(model="echo", messages=MSG, stream=True)  # type: ignore[arg-type]
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
            "hello from the relay"
        )
        with pytest.raises(openai.NotFoundError):
            oai.chat.completions.create(model="no-such-model", messages=MSG)  # type: ignore[arg-type]

        # echo-sleepy starts asleep: the request wakes it through the wake controller.
        reply = oai.chat.completions.create(model="echo-sleepy", messages=MSG)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == "hello from the relay"

        # The publisher dies without deregistering; the sweeper marks its rows inactive.
        publisher_pid = dev.publisher_pid()
        os.kill(publisher_pid, signal.SIGKILL)
        wait_until(lambda: _process_gone(publisher_pid), 10, "the publisher lives on", interval=0.1)
        wait_until(
            lambda: _row_status(dev, "echo") == "inactive", 30, "echo not swept", interval=0.1
        )
        with pytest.raises(openai.APIStatusError) as info:
            oai.chat.completions.create(model="echo", messages=MSG)  # type: ignore[arg-type]
        assert info.value.status_code == 503
        assert "offline" in info.value.message

        assert dev.stop(signal.SIGTERM) == 0
    assert not dev.pid_file.exists()


@pytest.mark.slow
def test_ctrl_c_deregisters_the_demo_publisher_then_stops(tmp_path: Path) -> None:
    with natrelay_dev(tmp_path, "--demo") as dev:
        dev.wait_for(r"^demo ready")
        publisher_pid = dev.publisher_pid()
        # As a terminal's Ctrl-C does: the foreground process group gets SIGINT.
        os.killpg(dev.process.pid, signal.SIGINT)
        assert dev.process.wait(timeout=30) == 0
        assert _process_gone(publisher_pid)
        assert "deregistered session" in dev.text()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killed_dev_takes_the_demo_publisher_with_it(tmp_path: Path) -> None:
    with natrelay_dev(tmp_path, "--demo") as dev:
        dev.wait_for(r"^demo ready")
        publisher_pid = dev.publisher_pid()
        dev.process.kill()
        dev.process.wait(timeout=10)
        assert _gone_within(publisher_pid, 20)


def test_plain_dev_serves_and_stops_on_sigint(tmp_path: Path) -> None:
    with natrelay_dev(tmp_path) as dev:
        dev.wait_for(r"^Ctrl-C stops everything")
        wait_http(f"{dev.url}/healthz")
        models = httpx.get(
            f"{dev.url}/v1/models", headers={"Authorization": f"Bearer {DEV_CLIENT_TOKEN}"}
        )
        assert models.status_code == 200
        assert models.json()["data"] == []
        assert f"client token:     {DEV_CLIENT_TOKEN}" in dev.text()
        # one line per request, saying what it was (not uvicorn's access line beside a
        # bare "request")
        rid = models.headers["x-request-id"]
        line = dev.wait_for(
            rf"^INFO +GET /v1/models -> 200 in [\d.]+ ms \(key static-client, request {rid}\)$"
        )
        assert line
        assert '"GET /v1/models HTTP/1.1"' not in dev.text()
        assert not re.search(r"^INFO +request$", dev.text(), re.MULTILINE)
        snippet = re.search(r"^  relay: .*\n  providers:\n.*\n", dev.text(), re.MULTILINE)
        assert snippet is not None
        config_module = pytest.importorskip("natrelay_publisher.config")
        (tmp_path / "publisher.yaml").write_text(snippet[0].replace("MODEL", "m"))
        assert config_module.load_config(tmp_path / "publisher.yaml").relay.url == dev.url
        assert dev.stop(signal.SIGINT) == 0


@pytest.mark.slow
def test_stopping_dev_answers_waiting_polls_cleanly(tmp_path: Path) -> None:
    """An outside publisher long-polls while `natrelay dev` stops: its polls get a clean
    503, not a 500 after uvicorn's grace, and the output has no traceback."""
    running = pytest.importorskip("tests.publisher.running")
    with natrelay_dev(tmp_path) as dev:
        dev.wait_for(r"^Ctrl-C stops everything")
        config = {
            "relay": {
                "url": dev.url,
                "token": "dev-publish-token",
                "sessionFile": str(tmp_path / "session.json"),
                "pollWaitSeconds": 25,
                "heartbeatSeconds": 1,
                "doorbell": {"enabled": False},  # a long-poll waits in the relay
            },
            "providers": [{"name": "outside", "type": "echo"}],
        }
        # DEBUG: httpx logs each request that got its answer
        publisher = running.start_publisher(config, tmp_path, "outside", "--log-level", "DEBUG")
        try:
            publisher.wait_log("registered session")
            # a heartbeat went by: the poll sent at registration waits in the relay
            publisher.wait_log('_provider-heartbeat "HTTP/1.1 200')
            stopped_at = time.monotonic()
            assert dev.stop(signal.SIGINT) == 0
            # Not after the poll's 25 s wait: it was answered at once (the 503 below). No
            # tighter bound: under load a clean stop alone can take seconds.
            assert time.monotonic() - stopped_at < 20
            publisher.wait_log("relay unreachable")
        finally:
            publisher.stop()
    text = dev.text()
    assert "Traceback" not in text and "500 Internal Server Error" not in text, text
    log = publisher.log()
    assert "answered 503: the relay is shutting down" in log, log
    assert "answered 500" not in log


def test_dev_uses_a_given_dynamodb_and_tokens(tmp_path: Path, moto_server: MotoProcess) -> None:
    prefix = f"given-{os.getpid()}-"
    with natrelay_dev(
        tmp_path,
        "--dynamodb-endpoint",
        moto_server.endpoint,
        "--table-prefix",
        prefix,
        "--client-token",
        "client-secret-1234",
        "--publisher-token",
        "publish-secret-1234",
    ) as dev:
        dev.wait_for(r"^Ctrl-C stops everything")
        names = TableNames.with_prefix(prefix)
        ddb = dynamodb_client(moto_server.endpoint)
        tables = {
            name
            for page in ddb.get_paginator("list_tables").paginate()
            for name in page["TableNames"]
        }
        assert {names.llms, names.tasks} <= tables
        auth = {"Authorization": "Bearer client-secret-1234"}
        assert httpx.get(f"{dev.url}/v1/models", headers=auth).status_code == 200
        wrong = {"Authorization": f"Bearer {DEV_CLIENT_TOKEN}"}
        assert httpx.get(f"{dev.url}/v1/models", headers=wrong).status_code == 401
        assert dev.stop() == 0


def test_dev_reports_a_busy_port(tmp_path: Path) -> None:
    with WakeController() as busy:  # anything listening on 127.0.0.1
        port = busy.url.rsplit(":", 1)[1]
        result = subprocess.run(
            [*_natrelay(), "dev", "--port", port],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_dev_reports_an_unreachable_dynamodb() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [*_natrelay(), "dev", "--port", "0", "--dynamodb-endpoint", nobody],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 1
    assert f"cannot create the tables at {nobody}" in result.stderr
    assert "Traceback" not in result.stderr


def test_dev_answers_only_its_own_host_names(tmp_path: Path) -> None:
    """DNS rebinding: a web page on attacker.example whose name is made to point at
    127.0.0.1 reaches `natrelay dev` with `Host: attacker.example`, and knows its default
    tokens. Only IP literals, localhost and the names given with --allowed-host answer."""
    with natrelay_dev(tmp_path, "--allowed-host", "relay.lan") as dev:
        dev.wait_for(r"^Ctrl-C stops everything")
        port = dev.url.rsplit(":", 1)[1]
        auth = {"Authorization": f"Bearer {DEV_CLIENT_TOKEN}"}

        def models(host: str) -> httpx.Response:
            return httpx.get(f"{dev.url}/v1/models", headers={**auth, "Host": host})

        for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.nip.io"):
            refused = models(host)
            assert refused.status_code == 400, (host, refused.text)
            assert refused.json()["error"]["param"] == "Host"
        login = httpx.get(f"{dev.url}/console/login", headers={"Host": f"evil.test:{port}"})
        assert login.status_code == 400
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}", "relay.lan"):
            assert models(host).status_code == 200, host
        assert dev.stop() == 0


def test_dev_on_a_remote_dynamodb_has_no_default_tokens(tmp_path: Path) -> None:
    """Pointed at DynamoDB elsewhere (a deployed stack's tables), `natrelay dev` has no
    admin token unless given one, and no well-known client or publisher token."""
    with natrelay_dev(
        tmp_path,
        "--dynamodb-endpoint",
        "http://dynamodb.invalid:8000",  # never reached: nothing here calls DynamoDB
        "--no-create-tables",
        "--sweep-interval",
        "0",
    ) as dev:
        dev.wait_for(r"^Ctrl-C stops everything")
        text = dev.text()
        assert "dev-admin-token" not in text and DEV_CLIENT_TOKEN not in text
        assert re.search(r"admin token: +none", text), text
        admin = {"Authorization": "Bearer dev-admin-token"}
        assert httpx.get(f"{dev.url}/api/v1/keys", headers=admin).status_code == 401
        assert dev.stop() == 0


def test_debug_logs_never_hold_a_secrets_value(tmp_path: Path) -> None:
    """`--log-level debug` logs botocore's calls; never the parameters or answers of the
    calls that create or read a secret (CreateSecret, GetSecretValue)."""
    value = "sk-live-0123456789abcdefSECRET"
    os.environ["UPSTREAM_KEY_FOR_TEST"] = value
    try:
        with natrelay_dev(
            tmp_path,
            "--log-level",
            "debug",
            "--secret-from-env",
            "natrelay/up=UPSTREAM_KEY_FOR_TEST",
        ) as dev:
            dev.wait_for(r"^Ctrl-C stops everything")
            # apply reads the secret back (it checks that the relay can)
            doc = {
                "name": "up",
                "kind": "public",
                "baseUrl": "http://127.0.0.1:9/v1",
                "model": "m",
                "apiKey": {"secretsManager": "natrelay/up"},
            }
            applied = httpx.post(
                f"{dev.url}/api/v1/llms/_apply",
                headers={"Authorization": "Bearer dev-admin-token"},
                json={"documents": [doc]},
                timeout=30,
            )
            assert applied.status_code == 200, applied.text
            assert dev.stop() == 0
    finally:
        del os.environ["UPSTREAM_KEY_FOR_TEST"]
    text = dev.text()
    assert "CreateSecret" in text or "secretsmanager" in text.lower()  # botocore did log
    assert value not in text


def test_a_session_id_never_reaches_the_access_log(tmp_path: Path) -> None:
    """The request fetch names its session in a header (X-Natrelay-Session); the query
    of older publishers still works, and no access log line shows it."""
    scripted = pytest.importorskip("tests.support.scripted")
    with natrelay_dev(tmp_path) as dev:
        dev.wait_for(r"^Ctrl-C stops everything")
        pub = scripted.ScriptedPublisher(
            dev.url, "dev-publish-token", [{"name": "fetch", "type": "echo", "model": "e"}]
        )
        sid = pub.register()
        queued = httpx.post(
            f"{dev.url}/api/v1/llms/fetch/infer",
            headers={"Authorization": f"Bearer {DEV_CLIENT_TOKEN}", "Prefer": "respond-async"},
            json={"messages": MSG},
            timeout=30,
        )
        assert queued.status_code == 202, queued.text
        [task] = pub.poll_once(wait=5)
        url = f"/api/v1/llms/_provider-task/{task['id']}/request"
        by_header = pub.http.get(url, headers={"X-Natrelay-Session": sid})
        assert by_header.status_code == 200 and by_header.json()["messages"] == MSG
        by_query = pub.http.get(url, params={"providerSessionId": sid})  # older publishers
        assert by_query.status_code == 200
        other = pub.http.get(url, headers={"X-Natrelay-Session": "not-this-session"})
        assert other.status_code == 403
        pub.http.close()
        assert dev.stop() == 0
    text = dev.text()
    assert f"{url}" in text  # the access log is on, and shows the path
    assert sid not in text, text
