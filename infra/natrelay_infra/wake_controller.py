"""A pretend sleeping backend for the demo: `/ready` answers 503 until `/wake` is called.

`natrelay dev --demo` publishes `echo-sleepy` with `availabilityUrl` pointing at
`/ready` and an `http` wake recipe that POSTs `/wake`, so the wake-on-demand path
can be seen without a real machine to wake. The tests use it as their wake target too.
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


class WakeController:
    """Serves GET /ready, /wake (ready `wake_delay` seconds later), POST /sleep, POST /fail.

    `/wake` takes POST, PUT or GET; `/fail` is a wake that fails (500). Both are recorded
    in `wake_calls` (method, headers with lower-case names, body).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, wake_delay: float = 1.0) -> None:
        self.wake_delay = wake_delay
        self.wake_calls: list[dict[str, Any]] = []
        self._awake = threading.Event()
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="wake-controller", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    @property
    def awake(self) -> bool:
        return self._awake.is_set()

    @awake.setter
    def awake(self, value: bool) -> None:
        """Be up (or asleep) at once, as a backend woken or stopped by other means."""
        self.sleep()
        if value:
            self._awake.set()

    def wake(self) -> None:
        """Become ready after the delay; waking an awake or waking backend changes nothing."""
        with self._lock:
            if self._awake.is_set() or self._timer is not None:
                return
            if self.wake_delay <= 0:
                self._awake.set()
                return
            self._timer = threading.Timer(self.wake_delay, self._finish_wake)
            self._timer.daemon = True
            self._timer.start()

    def sleep(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._awake.clear()

    def _finish_wake(self) -> None:
        with self._lock:
            self._timer = None
            self._awake.set()

    def record_call(self, method: str, headers: dict[str, str], body: bytes) -> None:
        with self._lock:
            self.wake_calls.append({"method": method, "headers": headers, "body": body.decode()})

    def start(self) -> WakeController:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.sleep()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> WakeController:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler_for(controller: WakeController) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

        def _route(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = urlsplit(self.path).path  # a wake URL may carry a key in its query
            route = (method, path)
            if route == ("GET", "/ready"):
                if controller.awake:
                    self._reply(HTTPStatus.OK, b'{"ready": true}')
                else:
                    self._reply(HTTPStatus.SERVICE_UNAVAILABLE, b'{"ready": false}')
            elif path == "/wake":
                self._record(method, body)
                controller.wake()
                self._reply(HTTPStatus.ACCEPTED, b'{"waking": true}')
            elif route == ("POST", "/sleep"):
                controller.sleep()
                self._reply(HTTPStatus.OK, b'{"sleeping": true}')
            elif route == ("POST", "/fail"):
                self._record(method, body)
                error = b"the power switch is stuck"
                self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, error, "text/plain")
            else:
                self._reply(HTTPStatus.NOT_FOUND, b'{"error": "not found"}')

        def _record(self, method: str, body: bytes) -> None:
            headers = {name.lower(): value for name, value in self.headers.items()}
            controller.record_call(method, headers, body)

        def _reply(
            self, status: HTTPStatus, body: bytes, content_type: str = "application/json"
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the relay's own log says what happened; keep the demo output readable

    return Handler
