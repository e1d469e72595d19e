"""Servers on 127.0.0.1 for tests and the benchmark: ports, sockets, waiting, ASGI apps."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.client import HTTPConnection
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listen(port: int = 0) -> socket.socket:
    """A TCP socket bound to 127.0.0.1:`port` (0: a free one), for uvicorn's `sockets=`.

    IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose `proto` says
    TCP, and socket.socket() says 0 — keep-alive answers would wait ~40 ms for the
    client's delayed ACK (Nagle).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


@contextmanager
def closed_port() -> Iterator[str]:
    """The URL of a port of 127.0.0.1 where nothing listens (a connection is refused),
    held for the block so that no other test's server takes it meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def post_unread(base_url: str, path: str, body: Any, token: str) -> HTTPConnection:
    """POST `body` as JSON and read nothing: closing the connection hangs up mid-wait (a
    non-streamed answer sends no headers before it is done, so httpx cannot)."""
    url = urlsplit(base_url)
    connection = HTTPConnection(url.hostname or "", url.port, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connection.request("POST", path, json.dumps(body), headers)
    return connection


T = TypeVar("T")


def wait_until(
    check: Callable[[], T],
    timeout: float,
    message: str | Callable[[], str] = "condition not met",
    interval: float = 0.05,
) -> T:
    """Call `check` until it returns something true, and return that; TimeoutError after
    `timeout` s, saying `message` (a callable is asked only then)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(message if isinstance(message, str) else message())
        time.sleep(interval)
    return value


def wait_http(url: str, timeout: float = 60.0, alive: Callable[[], bool] = lambda: True) -> None:
    """Wait until `url` answers below 500; TimeoutError after `timeout` s or once not `alive()`."""
    gave_up = f"{url} did not answer within {timeout:g} s"

    def answered() -> bool:
        try:
            if httpx.get(url, timeout=2.0).status_code < 500:
                return True
        except httpx.TransportError:
            pass
        if not alive():
            raise TimeoutError(gave_up)
        return False

    wait_until(answered, timeout, gave_up)


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve an ASGI app on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    sock = listen()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
