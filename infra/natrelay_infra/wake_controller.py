"""A pretend sleeping backend for the demo: `/ready` answers 503 until `/wake` is posted.

`natrelay dev --demo` publishes `echo-sleepy` with `availabilityUrl` pointing at
`/ready` and an `http` wake recipe that POSTs `/wake`, so the wake-on-demand path
can be seen without a real machine to wake.
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WakeController:
    """Serves GET /ready, POST /wake (ready `wake_delay` seconds later) and POST /sleep."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, wake_delay: float = 1.0) -> None:
        self.wake_delay = wake_delay
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

    def wake(self) -> None:
        """Become ready after the delay; waking an awake or waking backend changes nothing."""
        with self._lock:
            if self._awake.is_set() or self._timer is not None:
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
            if self.path == "/ready":
                if controller.awake:
                    self._reply(HTTPStatus.OK, b'{"ready": true}')
                else:
                    self._reply(HTTPStatus.SERVICE_UNAVAILABLE, b'{"ready": false}')
            else:
                self._reply(HTTPStatus.NOT_FOUND, b'{"error": "not found"}')

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if self.path == "/wake":
                controller.wake()
                self._reply(HTTPStatus.ACCEPTED, b'{"waking": true}')
            elif self.path == "/sleep":
                controller.sleep()
                self._reply(HTTPStatus.OK, b'{"sleeping": true}')
            else:
                self._reply(HTTPStatus.NOT_FOUND, b'{"error": "not found"}')

        def _reply(self, status: HTTPStatus, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the relay's own log says what happened; keep the demo output readable

    return Handler
