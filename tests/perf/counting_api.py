"""The relay API under uvicorn, with DynamoDB requests and request durations counted.

`python -m tests.perf.counting_api --port N` (settings from NATRELAY_* as usual) runs
`natrelay.web:create_app()` unchanged behind a thin ASGI wrapper that adds

* `GET /_bench/stats`: DynamoDB operations of the app's boto3 client (counts, estimated
  capacity units, round-trip seconds; see tests/support/counting.py), the time spent in
  requests per route kind (the billed duration if this process were a Lambda), and the
  wall-clock time each task id left in a poll answer (`delivered`);
* `POST /_bench/reset`: start counting afresh.

Each chat request also notes the task it wrote (`chats`: task id -> when it reached the
relay, when the app got it, when its answer left), so that legs can be timed per task at
any concurrency. "Reached the relay" is the `x-bench-arrived` header the Lambda pool
(tests/perf/lambda_pool.py) stamps, else when the app got it. `--fd N` serves on a
listening socket the parent made (the pool's instances).
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from collections import Counter, defaultdict
from contextvars import ContextVar
from typing import Any

import uvicorn

from natrelay.web import create_app
from natrelay.wire import Paths
from tests.support.counting import MAX_EVENTS, OpCounter

Scope = dict[str, Any]
ARRIVED_HEADER = b"x-bench-arrived"
# The task ids the current request wrote (botocore's hooks run in anyio's worker threads,
# which copy the request's context).
_written: ContextVar[list[str] | None] = ContextVar("written", default=None)


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

    def __init__(self, app: Any, ops: OpCounter, client: Any) -> None:
        self.app = app
        self.ops = ops
        self._lock = threading.Lock()
        self._in_flight: dict[int, tuple[str, float]] = {}
        self.reset()
        # After the counter's own hooks (registered first), which name the call's task.
        client.meta.events.register("after-call.dynamodb", self._note_put)

    @staticmethod
    def _note_put(context: dict[str, Any], **_: Any) -> None:
        _, note, task_id = context.get("_bench", (None, None, None))
        written = _written.get()
        if written is not None and note == "put" and task_id:
            written.append(task_id)

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
            self.chats: dict[str, list[float]] = {}

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
                "chats": dict(self.chats),
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
        got = time.time()
        arrived = float(dict(scope["headers"]).get(ARRIVED_HEADER, got))
        written: list[str] = []
        token = _written.set(written) if kind == "chat" else None
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
            if token is not None:
                _written.reset(token)
            with self._lock:
                self._in_flight.pop(key, None)
                self.request_seconds[kind] += ended - started
                self.busy[kind] += max(0.0, ended - max(started, self.since))
                if len(written) == 1 and len(self.chats) < MAX_EVENTS:
                    self.chats[written[0]] = [arrived, got, time.time()]

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
    client = app.state.relay.stores.client
    ops = OpCounter()
    ops.attach(client)
    return Recorder(app, ops, client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int)
    where.add_argument("--fd", type=int, help="serve on this inherited listening socket")
    args = parser.parse_args()
    config = uvicorn.Config(
        counted_app(),
        host="127.0.0.1",
        port=args.port or 0,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        backlog=2048,
    )
    sockets = None if args.fd is None else [socket.socket(fileno=args.fd)]
    uvicorn.Server(config).run(sockets=sockets)


if __name__ == "__main__":
    main()
