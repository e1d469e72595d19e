"""The relay API under uvicorn, with DynamoDB requests and request durations counted.

`python -m tests.perf.counting_api --port N` (settings from NATRELAY_* as usual) runs
`natrelay.web:create_app()` unchanged behind a thin ASGI wrapper that adds

* `GET /_bench/stats`: DynamoDB operations of the app's boto3 client (counts, estimated
  capacity units, round-trip seconds; see tests/support/counting.py), the time spent in
  requests per route kind (the billed duration if this process were a Lambda), and the
  wall-clock time each task id left in a poll answer (`delivered`);
* `POST /_bench/reset`: start counting afresh.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import uvicorn

from natrelay.web import create_app
from natrelay.wire import Paths
from tests.support.counting import MAX_EVENTS, OpCounter

Scope = dict[str, Any]


_RESULT = Paths.TASK_RESULT.removeprefix(Paths.PROVIDER_TASK)
_CHUNKS = Paths.TASK_CHUNKS.removeprefix(Paths.PROVIDER_TASK)
_INFER = Paths.INFER.removeprefix(Paths.LLM)


def route_kind(method: str, path: str) -> str:
    if path == Paths.POLL:
        return "poll"
    if path == Paths.CLAIM:
        return "claim"  # the doorbell's polls, which never wait
    if path == Paths.HEARTBEAT:
        return "heartbeat"
    if path.startswith(Paths.PROVIDER):
        if path.endswith(_RESULT):
            return "result"
        if path.endswith(_CHUNKS):
            return "chunks"
        return "session"
    if path == Paths.CHAT or path.endswith(_INFER):
        return "chat"
    return "other"


class Recorder:
    """ASGI wrapper: serves /_bench/*, times every other request, notes poll deliveries."""

    def __init__(self, app: Any, ops: OpCounter) -> None:
        self.app = app
        self.ops = ops
        self._lock = threading.Lock()
        self._in_flight: dict[int, tuple[str, float]] = {}
        self.reset()

    def reset(self) -> None:
        self.ops.reset()
        with self._lock:
            self.since = time.perf_counter()
            self.requests: Counter[str] = Counter()
            self.request_seconds: defaultdict[str, float] = defaultdict(float)
            # Time inside requests since the reset (in-flight ones up to now): what a
            # Lambda would bill, a long-poll holding its instance for its whole wait.
            self.busy: defaultdict[str, float] = defaultdict(float)
            self.delivered: dict[str, float] = {}

    def stats(self) -> dict[str, Any]:
        now = time.perf_counter()
        with self._lock:
            busy = dict(self.busy)
            for kind, started in self._in_flight.values():
                busy[kind] = busy.get(kind, 0.0) + now - max(started, self.since)
            return {
                **self.ops.snapshot(),
                "requests": dict(self.requests),
                "requestSeconds": dict(self.request_seconds),
                "busySeconds": busy,
                "delivered": dict(self.delivered),
            }

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/_bench/"):
            await self._bench(scope, send)
            return
        kind = route_kind(scope["method"], path)
        body: list[bytes] | None = [] if kind in ("poll", "claim") else None
        started = time.perf_counter()
        key = id(scope)
        with self._lock:
            self._in_flight[key] = (kind, started)
            self.requests[kind] += 1  # an invocation, counted when it starts

        async def recording_send(message: dict[str, Any]) -> None:
            if body is not None and message["type"] == "http.response.body":
                body.append(message.get("body", b""))
                if not message.get("more_body"):
                    self._deliveries(b"".join(body))
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            ended = time.perf_counter()
            with self._lock:
                self._in_flight.pop(key, None)
                self.request_seconds[kind] += ended - started
                self.busy[kind] += max(0.0, ended - max(started, self.since))

    def _deliveries(self, raw: bytes) -> None:
        now = time.time()
        try:
            tasks = json.loads(raw).get("tasks", [])
        except (ValueError, AttributeError):
            return
        with self._lock:
            for task in tasks:
                if len(self.delivered) < MAX_EVENTS:
                    self.delivered.setdefault(task["id"], now)

    async def _bench(self, scope: Scope, send: Any) -> None:
        if scope["path"] == "/_bench/reset" and scope["method"] == "POST":
            self.reset()
            payload: dict[str, Any] = {"reset": True}
        elif scope["path"] == "/_bench/stats":
            payload = self.stats()
        else:
            payload = {"error": "not found"}
        data = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200 if "error" not in payload else 404,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})


def counted_app() -> Recorder:
    app = create_app()
    ops = OpCounter()
    ops.attach(app.state.relay.stores.client)
    return Recorder(app, ops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        counted_app(),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        backlog=2048,
    )


if __name__ == "__main__":
    main()
