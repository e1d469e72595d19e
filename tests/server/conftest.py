from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from natrelay.service import Principal, Relay
from natrelay.service.assembly import build_relay
from natrelay.settings import Settings
from natrelay.store import Stores, TaskRecord
from natrelay.web import views
from natrelay.wire import (
    LlmStatus,
    PolledTask,
    PollRequest,
    ProviderSpec,
    RegisterRequest,
    Role,
)
from natrelay_infra.moto_server import MotoProcess
from natrelay_infra.tables import TableNames, create_tables
from tests.support.counting import OpCounter  # noqa: F401 - the server tests import it here
from tests.support.stack import Stack, running_stack

# Who the service-level tests act as: one publisher key and one unscoped client key.
PUB = Principal(key_id="pub-a", role=Role.PUBLISHER)
CLIENT = Principal(key_id="client-a", role=Role.CLIENT)


class FakeClock:
    """Time that moves only when told to (or by `step` on every read)."""

    def __init__(self, start: float = 1_800_000_000.0, step: float = 0.0) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings() -> Settings:
    return Settings(
        llms_table="Llms",
        tasks_table="Tasks",
        publish_token="p" * 20,  # type: ignore[arg-type]
        client_token="c" * 20,  # type: ignore[arg-type]
        poll_min_interval_seconds=0.005,
        poll_max_interval_seconds=0.02,
    )


@pytest.fixture
def client(aws: None) -> Any:
    client = boto3.client("dynamodb", region_name="us-east-1")
    create_tables(client, TableNames(llms="Llms", tasks="Tasks", keys="Keys"))
    return client


@pytest.fixture
def relay(client: Any, settings: Settings, clock: FakeClock) -> Relay:
    return build_relay(settings, Stores.on(client, "Llms", "Tasks", "Keys"), clock=clock)


def spec(
    name: str, status: LlmStatus = LlmStatus.ACTIVE, wake: float | None = None
) -> ProviderSpec:
    return ProviderSpec(
        name=name, type="echo", model="echo", initial_status=status, wake_max_wait_seconds=wake
    )


async def register(relay: Relay, *specs: ProviderSpec, session: str | None = None) -> str:
    registration = await relay.sessions.register(
        PUB, RegisterRequest(providers=list(specs), provider_session_id=session)
    )
    return registration.session.id


async def claim(relay: Relay, session: str, n: int = 10) -> list[PolledTask]:
    """The tasks a poll that does not wait claims, as the publisher receives them."""
    tasks = await relay.claims.poll(
        PUB, PollRequest(provider_session_id=session, wait_seconds=0, max_tasks=n)
    )
    return [views.polled_task(t) for t in tasks]


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


async def claimed(relay: Relay, *, stream: bool = False) -> tuple[str, TaskRecord]:
    """A publisher session with `a` registered, and one task of it already claimed."""
    sid = await register(relay, spec("a"))
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=stream)
    await claim(relay, sid)
    return sid, task


@pytest.fixture
def keyed(moto_server: MotoProcess) -> Iterator[Stack]:
    """A relay API (uvicorn, the moto server) whose stored keys are re-read at once
    (revocation tests set their own cache time)."""
    with running_stack(
        moto_server.endpoint, heartbeat_timeout_seconds=5, key_cache_seconds=0
    ) as running:
        yield running
