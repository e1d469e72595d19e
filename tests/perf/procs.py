"""The benchmark's stack: backends, relay stacks (counting API + real publisher), LiteLLM.

Its children are tests/support/processes.py's, as the tests' process stack's are.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from natrelay.wire import Paths
from natrelay_infra.tables import TableNames, create_tables
from tests.support.net import free_port, wait_http
from tests.support.processes import ROOT, Child
from tests.support.stack import (
    CLIENT_TOKEN,
    PUBLISH_TOKEN,
    dynamodb_client,
    relay_env,
    wake_tasks_written,
)

LITELLM_KEY = "sk-bench-master-key"


def child(
    name: str,
    args: list[str],
    logdir: Path,
    env: dict[str, str] | None = None,
    *,
    pipe: bool = False,
) -> Child:
    """A child whose output goes to the run's directory (`name`.log)."""
    return Child(name, args, env=env, log=logdir / f"{name}.log", pipe=pipe)


# The idle doorbell publisher polls once a minute by default, and each of those polls
# refreshes its heartbeat. An idle window of a minute would see 0, 1 or 2 of them, so the
# knob stacks poll every 10 s with a 15 s heartbeat timeout (every poll refreshes the
# heartbeat, as at the defaults: 60 s polls, refresh due after 15 s), and the idle
# figures are scaled to one such poll a minute (report.idle_rates).
IDLE_DOORBELL: dict[str, Any] = {
    "doorbell": True,
    "heartbeat_timeout_seconds": 15.0,
    "publisher_doorbell": {"safetyPollSeconds": 10},
}


@dataclass
class Backend:
    proc: Child
    url: str

    @classmethod
    def start(cls, name: str, logdir: Path, *args: str) -> Backend:
        """The fake backend (tests/support/backend.py), echoing, as a child process."""
        command = [sys.executable, "-m", "tests.support.backend", "--echo", *args]
        proc = child(name, command, logdir, pipe=True)
        url = proc.first_line()
        wait_http(f"{url}/_fake/state", 20, lambda: proc.alive)
        return cls(proc, url)

    def state(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/_fake/state", timeout=5).json())


@dataclass
class Api:
    proc: Child
    url: str

    def reset(self) -> None:
        httpx.post(f"{self.url}/_bench/reset", timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/_bench/stats", timeout=10).json())


@dataclass
class Stack:
    """Fresh tables, 1 or 2 counting API processes and one real publisher process.

    `lambda_mode`: in-process signals off and two API processes, the publisher talking to
    one and clients to the other, as two Lambda instances would be. With `pool` as well,
    one request per API process instead, as Lambda runs them: the Lambda pool
    (tests/perf/lambda_pool.py) in front of as many processes as the load needs.

    `doorbell`: the publisher keeps a doorbell WebSocket: in Lambda mode to the API Gateway
    stand-in (tests/perf/counting_gateway.py), which the API processes ring through as on
    AWS; long-lived, to the API process itself (rung in-process, as natrelay dev does).
    Without it the relay offers none and the publisher long-polls.
    """

    name: str
    endpoint: str
    lambda_mode: bool
    settings: dict[str, Any]
    tables: TableNames
    logdir: Path = Path()
    providers: list[dict[str, Any]] = field(default_factory=list)
    apis: list[Api] = field(default_factory=list)
    publisher: Child | None = None
    # Publisher processes serving the providers: more than one makes each name a pool.
    members: int = 1
    publishers: list[Child] = field(default_factory=list)
    doorbell: bool = False
    gateway: Api | None = None
    # the publisher's `relay.doorbell` section
    publisher_doorbell: dict[str, Any] = field(default_factory=dict)
    # Lambda mode, one request per instance: `apis` is the pool alone.
    pool: bool = False
    # Each member's own providers (its own backend), instead of `providers` for all.
    member_providers: list[list[dict[str, Any]]] = field(default_factory=list)

    @property
    def client_api(self) -> Api:
        return self.apis[-1]

    @property
    def publisher_api(self) -> Api:
        return self.apis[0]

    @property
    def env(self) -> dict[str, str]:
        return relay_env(
            self.endpoint,
            self.tables,
            in_process_signals=not self.lambda_mode,
            **self.settings,
        )

    @classmethod
    def start(
        cls,
        name: str,
        endpoint: str,
        logdir: Path,
        providers: list[dict[str, Any]],
        *,
        lambda_mode: bool,
        **settings: Any,
    ) -> Stack:
        return start_stacks(
            {
                name: {
                    "name": name,
                    "endpoint": endpoint,
                    "logdir": logdir,
                    "providers": providers,
                    "lambda_mode": lambda_mode,
                    **settings,
                }
            }
        )[name]

    @classmethod
    def _launch_apis(
        cls,
        name: str,
        endpoint: str,
        logdir: Path,
        providers: list[dict[str, Any]],
        *,
        lambda_mode: bool,
        members: int = 1,
        **settings: Any,
    ) -> Stack:
        doorbell = bool(settings.pop("doorbell", False))
        publisher_doorbell = dict(settings.pop("publisher_doorbell", {}))
        pool = bool(settings.pop("pool", False)) and lambda_mode
        member_providers = list(settings.pop("member_providers", []))
        tables = TableNames.with_prefix(f"{name}-{uuid.uuid4().hex[:6]}-")
        create_tables(dynamodb_client(endpoint), tables)
        stack = cls(name, endpoint, lambda_mode, settings, tables, logdir=logdir, members=members)
        stack.providers = providers
        stack.doorbell = doorbell
        stack.publisher_doorbell = publisher_doorbell
        stack.pool = pool
        stack.member_providers = member_providers
        ports = [free_port() for _ in range(2 if lambda_mode and not pool else 1)]
        env = stack.env
        if doorbell and lambda_mode:
            port = free_port()
            gateway = child(
                f"{name}-gateway",
                [sys.executable, "-m", "tests.perf.counting_gateway", "--port", str(port)],
                logdir,
                env,
            )
            stack.gateway = Api(gateway, f"http://127.0.0.1:{port}")
            env = {
                **env,
                "NATRELAY_DOORBELL_ENDPOINT": f"{stack.gateway.url}/relay",
                "NATRELAY_DOORBELL_URL": f"ws://127.0.0.1:{port}/relay",
            }
        elif doorbell:
            env = {**env, "NATRELAY_DOORBELL_URL": f"ws://127.0.0.1:{ports[0]}{Paths.DOORBELL}"}
        for i, port in enumerate(ports):
            module = ["tests.perf.counting_api", "--port", str(port)]
            if pool:
                instances = logdir / f"{name}-instances"
                instances.mkdir(exist_ok=True)
                module = ["tests.perf.lambda_pool", "--port", str(port), "--logdir", str(instances)]
            proc = child(f"{name}-api{i}", [sys.executable, "-m", *module], logdir, env)
            stack.apis.append(Api(proc, f"http://127.0.0.1:{port}"))
        return stack

    def _launch_publisher(self) -> None:
        for api in self.apis:
            wait_http(f"{api.url}/healthz", 30, lambda api=api: api.proc.alive)  # type: ignore[misc]
        if self.gateway is not None:
            gateway = self.gateway
            wait_http(f"{gateway.url}/_gateway/stats", 30, lambda: gateway.proc.alive)
        for i in range(self.members):
            tag = self.name if i == 0 else f"{self.name}-m{i}"
            config = {
                "relay": {
                    "url": self.publisher_api.url,
                    "token": PUBLISH_TOKEN,
                    "sessionFile": str(self.logdir / f"{tag}-session.json"),
                    "doorbell": self.publisher_doorbell,
                },
                "providers": self.member_providers[i] if self.member_providers else self.providers,
            }
            path = self.logdir / f"{tag}-publisher.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
            self.publishers.append(
                child(
                    f"{tag}-publisher",
                    [sys.executable, "-m", "natrelay_publisher", "publish", "--config", str(path)],
                    self.logdir,
                )
            )
        self.publisher = self.publishers[0]

    def wait_published(self, names: list[str], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
        while time.monotonic() < deadline:
            assert self.publisher is not None
            if not self.publisher.alive:
                break
            try:
                rows = httpx.get(f"{self.client_api.url}{Paths.LLMS}", headers=headers, timeout=5)
                listed = {row["name"] for row in rows.json().get("data", [])}
                if set(names) <= listed:
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: the publisher did not publish {names}")

    def reset(self) -> None:
        if self.pool:
            httpx.post(f"{self.client_api.url}/_pool/reset", timeout=60).raise_for_status()
            return
        for api in self.apis:
            api.reset()

    def stats(self) -> list[dict[str, Any]]:
        if self.pool:
            return list(self.pool_stats()["instances"])
        return [api.stats() for api in self.apis]

    def ops(self) -> dict[str, int]:
        """DynamoDB requests by operation since the last reset, all API processes."""
        total: dict[str, int] = {}
        for stats in self.stats():
            for op, n in stats["ops"].items():
                total[op] = total.get(op, 0) + n
        return total

    def pool_stats(self) -> dict[str, Any]:
        """The Lambda pool's counts (`pool`) and its instances' stats (`instances`)."""
        response = httpx.get(f"{self.client_api.url}/_pool/stats", timeout=60)
        return dict(response.raise_for_status().json())

    def reap(self, keep: int = 0) -> int:
        """Stop the pool's idle instances (but the `keep` most recently used): the next
        requests meet cold ones."""
        response = httpx.post(f"{self.client_api.url}/_pool/reap?keep={keep}", timeout=60)
        return int(response.raise_for_status().json()["stopped"])

    def gateway_stats(self) -> dict[str, Any]:
        """The stand-in's counts (connects, rings delivered, pings, its DynamoDB requests)."""
        if self.gateway is None:
            return {}
        return dict(httpx.get(f"{self.gateway.url}/_gateway/stats", timeout=10).json())

    def wake_tasks_written(self) -> int:
        return wake_tasks_written(self.endpoint, self.tables.tasks)

    def stop(self) -> None:
        for publisher in self.publishers:
            publisher.stop(timeout=15)
        for api in self.apis:
            api.proc.stop()
        if self.gateway is not None:
            self.gateway.proc.stop()


def start_stacks(specs: dict[str, dict[str, Any]]) -> dict[str, Stack]:
    """Start several stacks at once (`specs`: name -> keyword arguments of Stack.start).

    Every child is started from this thread, the caller's: PR_SET_PDEATHSIG fires when
    the *thread* that forked the child exits, so worker threads must not start any.
    """
    started: list[Stack] = []
    try:
        for spec in specs.values():
            started.append(Stack._launch_apis(**spec))
        for stack in started:
            stack._launch_publisher()
        for stack in started:
            stack.wait_published([p["name"] for p in stack.providers])
    except BaseException:
        for stack in started:
            stack.stop()
        raise
    return dict(zip(specs, started, strict=True))


def litellm_binary() -> Path | None:
    path = Path(os.environ.get("NATRELAY_BENCH_LITELLM_VENV", ROOT / ".venv-litellm"))
    binary = path / "bin" / "litellm"
    return binary if binary.exists() else None


def start_litellm(backend_url: str, logdir: Path) -> tuple[Child, str] | None:
    """LiteLLM's proxy in front of the backend, from its own virtualenv; None if missing."""
    binary = litellm_binary()
    if binary is None:
        return None
    config = {
        "model_list": [
            {
                "model_name": "bench",
                "litellm_params": {
                    "model": "openai/bench-model",
                    "api_base": f"{backend_url}/v1",
                    "api_key": "sk-backend",
                },
            }
        ],
        "general_settings": {"master_key": LITELLM_KEY},
    }
    path = logdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    port = free_port()
    proc = child(
        "litellm",
        [str(binary), "--config", str(path), "--host", "127.0.0.1", "--port", str(port)],
        logdir,
        {
            "LITELLM_MASTER_KEY": LITELLM_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "NO_DOCS": "True",
        },
    )
    return proc, f"http://127.0.0.1:{port}"
