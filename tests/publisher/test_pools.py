"""A publisher says when a name it publishes is served by others of its key too (a
pool), and warns when that key is the shared publish token."""

from __future__ import annotations

from pathlib import Path

from tests.publisher.running import publisher_config, start_publisher, wait_rows
from tests.support.stack import Stack

ECHO = {"name": "echo", "type": "echo", "model": "echo"}
JOINED = "echo: joined a pool with 1 other live publisher(s) of this key"


def test_joining_a_pool_with_the_shared_token_is_said(stack: Stack, tmp_path: Path) -> None:
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    first = start_publisher(publisher_config(stack, first_dir, [ECHO]), first_dir)
    second = None
    try:
        wait_rows(stack, {"echo": "active"})
        first.wait_log("registered session")
        assert "joined a pool" not in first.log()
        second = start_publisher(publisher_config(stack, second_dir, [ECHO]), second_dir)
        second.wait_log(JOINED)
        assert "this is the shared publish token" in second.log()
        first.wait_log(JOINED)  # the first hears of it in its next heartbeat
        assert second.stop() == 0
        first.wait_log("echo: no other publisher serves it now", timeout=30)
    finally:
        for publisher in (first, second):
            if publisher is not None:
                publisher.stop()
