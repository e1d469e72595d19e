"""Doubles the publisher tests share: a scripted relay and a wake target."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from natrelay_infra.wake_controller import WakeController
from tests.publisher.fake_relay import FakeRelay
from tests.support.net import serve


@pytest.fixture
def relay() -> Iterator[tuple[str, FakeRelay]]:
    """A scripted relay (its URL, and itself); fails the test if it refused a request."""
    fake = FakeRelay()
    with serve(fake.app()) as url:
        yield url, fake
    assert not fake.invalid, f"requests the wire models refuse: {fake.invalid}"


@pytest.fixture
def controller() -> Iterator[tuple[str, WakeController]]:
    """A wake target that is up as soon as /wake is called (its URL, and itself)."""
    with WakeController(wake_delay=0) as state:
        yield state.url, state
