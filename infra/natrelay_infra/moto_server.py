"""moto's DynamoDB as a local server, with its requests serialized.

moto checks a condition and then writes without a lock, so under concurrent
requests two conditional writes can both "win". One lock around the WSGI app
makes every request atomic, which is what DynamoDB guarantees per item.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from natrelay_infra.children import stop_child
from natrelay_infra.journal import Journal

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serialized(app: WsgiApp) -> WsgiApp:
    """Wrap a WSGI app so that one request at a time runs, body included."""
    lock = threading.Lock()

    def wrapper(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with lock:
            return list(app(environ, start_response))

    return wrapper


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


class MotoServer:
    """A serialized moto server on host:port (port 0 picks a free one); with a `journal`,
    its state is restored from it first and kept in it (natrelay_infra.journal)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, journal: Journal | None = None
    ) -> None:
        app: WsgiApp = DomainDispatcherApplication(create_backend_app)
        self.journal = journal
        self.restored = 0
        if journal is not None:
            self.restored = journal.restore(app)
            app = journal.wrap(app)
        self._server: BaseWSGIServer = make_server(
            host, port, serialized(app), threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> MotoServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        if self.journal is not None:
            self.journal.close()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MotoProcess:
    """A serialized moto server in its own process, so it does not share a GIL with its load."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, state: Path | None = None) -> None:
        self._args = [
            sys.executable,
            "-m",
            "natrelay_infra.moto_server",
            "--host",
            host,
            "--port",
            str(port),
            *(["--state", str(state)] if state is not None else []),
        ]
        self._process: subprocess.Popen[str] | None = None
        self.endpoint = ""

    def start(self) -> MotoProcess:
        self._process = subprocess.Popen(self._args, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        self.endpoint = self._process.stdout.readline().strip()
        if not self.endpoint.startswith("http"):
            self.stop()
            raise RuntimeError("moto server did not start")
        return self

    def stop(self) -> None:
        if self._process is not None:
            self.resume()  # a stopped process cannot act on SIGTERM
            stop_child(self._process, timeout=10)

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections hang, as with a DynamoDB outage."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.kill(self.pid, signal.SIGCONT)

    def __enter__(self) -> MotoProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """Run a serialized moto server in the foreground (prints its endpoint)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state", type=Path, help="keep the state in this directory")
    args = parser.parse_args()
    journal = Journal(args.state) if args.state is not None else None
    server = MotoServer(args.host, args.port, journal)
    print(server.endpoint, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        server._server.serve_forever()
    if journal is not None:
        journal.close()


if __name__ == "__main__":
    main()
