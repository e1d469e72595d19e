from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from natrelay_infra.moto_server import MotoProcess
from tests.publisher.running import PublisherProcess
from tests.support import llama
from tests.support.stack import Stack, running_stack

# Whole suites of several processes each, left out by `scripts/test --fast`; elsewhere a
# test says it is slow with @pytest.mark.slow.
SLOW_SUITES = ("e2e", "faults", "soak")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    # The real llama.cpp backend's tests (tests/support/llama.py) run only when asked for.
    not_asked = pytest.mark.skip(reason=f"opt-in: {llama.OPT_IN}=1 (scripts/llama test)")
    for item in items:
        if item.path.is_relative_to(tests) and item.path.relative_to(tests).parts[0] in SLOW_SUITES:
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("llama") and not llama.opted_in():
            item.add_marker(not_asked)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoProcess]:
    """One serialized moto server for the whole run (of this worker); each test gets fresh
    tables. Its own process: an in-process server would share moto's global state with
    the tests that mock DynamoDB in this process, and lose its tables when they end."""
    with MotoProcess() as server:
        yield server


@pytest.fixture
def stack(moto_server: MotoProcess) -> Iterator[Stack]:
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


@pytest.fixture(scope="session")
def shared_stack(moto_server: MotoProcess) -> Iterator[Stack]:
    """One relay per worker for tests whose requests change nothing (refused bodies, keys,
    names): a test that registers, queues or writes anything takes its own `stack`."""
    with running_stack(
        moto_server.endpoint, heartbeat_timeout_seconds=5, key_cache_seconds=0
    ) as running:
        yield running
