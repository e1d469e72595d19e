from __future__ import annotations

from collections.abc import Iterator

import pytest

from natrelay_infra.moto_server import MotoServer
from tests.publisher.running import PublisherProcess
from tests.support.stack import Stack, running_stack


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One serialized moto server for the whole run; each test gets fresh tables."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def stack(moto_server: MotoServer) -> Iterator[Stack]:
    """A real relay API (uvicorn subprocess) on fresh tables, with fast timeouts for tests."""
    with running_stack(moto_server.endpoint, heartbeat_timeout_seconds=5) as running:
        yield running


@pytest.fixture
def publishers() -> Iterator[list[PublisherProcess]]:
    """Publishers a test started; killed at the end whatever happened."""
    started: list[PublisherProcess] = []
    yield started
    for publisher in started:
        if publisher.process.poll() is None:
            publisher.process.kill()
            publisher.process.wait()
