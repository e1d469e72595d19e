"""A scripted relay for daemon tests: the test decides which tasks each poll hands out.

It follows docs/protocol.md closely enough for the publisher, and records every call, so
tests can check what the real relay cannot easily show (poll sizes, ordering, statuses).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SESSION = "sess-fake-0001"
API = "/api/v1/llms"

Event = tuple[float, str, dict[str, Any]]


@dataclass
class FakeRelay:
    # Tasks to hand out, in order; a poll takes at most `maxTasks` of them unless
    # `ignore_max_tasks` is set (a relay handing out more than asked, as can happen).
    queue: list[dict[str, Any]] = field(default_factory=list)
    ignore_max_tasks: bool = False
    # Answer empty polls at once instead of waiting (a misbehaving relay).
    instant: bool = False
    register_delay: float = 0.0
    events: list[Event] = field(default_factory=list)
    rows: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Called with each poll's body before tasks are handed out (to script the next ones).
    on_poll: Callable[[dict[str, Any]], None] | None = None

    def add(self, *tasks: dict[str, Any]) -> None:
        with self.lock:
            self.queue.extend(tasks)

    def calls(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for _, k, body in self.events if k == kind]

    def results(self) -> dict[str, dict[str, Any]]:
        return {body["task"]: body for body in self.calls("result")}

    def _record(self, kind: str, body: dict[str, Any]) -> None:
        with self.lock:
            self.events.append((time.monotonic(), kind, body))

    def _session(self) -> JSONResponse:
        llms = [
            {
                "name": n,
                "kind": "virtual",
                "type": "echo",
                "model": "echo",
                "status": s,
                "providerSessionId": SESSION,
            }
            for n, s in self.rows.items()
        ]
        return JSONResponse({"providerSessionId": SESSION, "llms": llms})

    def app(self) -> Starlette:
        async def register(request: Request) -> Response:
            body = await request.json()
            self._record("register", body)
            await asyncio.sleep(self.register_delay)
            self.rows = {p["name"]: p.get("initialStatus", "active") for p in body["providers"]}
            return self._session()

        async def heartbeat(request: Request) -> Response:
            body = await request.json()
            self._record("heartbeat", body)
            self.rows.update(body.get("statuses") or {})
            return self._session()

        async def poll(request: Request) -> Response:
            body = await request.json()
            self._record("poll", body)
            if self.on_poll is not None:
                self.on_poll(body)
            deadline = time.monotonic() + (0 if self.instant else body["waitSeconds"])
            while True:
                with self.lock:
                    take = len(self.queue) if self.ignore_max_tasks else body["maxTasks"]
                    tasks, self.queue[:take] = self.queue[:take], []
                if tasks or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.02)
            return JSONResponse({"tasks": tasks})

        async def chunks(request: Request) -> Response:
            body = await request.json()
            self._record("chunks", {**body, "task": request.path_params["task_id"]})
            return JSONResponse({"seq": body["seq"]})

        async def result(request: Request) -> Response:
            body = await request.json()
            self._record("result", {**body, "task": request.path_params["task_id"]})
            return JSONResponse(
                {
                    "id": request.path_params["task_id"],
                    "kind": "infer",
                    "llm": "x",
                    "state": "completed",
                    "createdAt": "now",
                }
            )

        async def deregister(request: Request) -> Response:
            self._record("deregister", await request.json())
            self.rows = dict.fromkeys(self.rows, "inactive")
            return self._session()

        task = API + "/_provider-task/{task_id}"
        return Starlette(
            routes=[
                Route(f"{API}/_provider-register", register, methods=["POST"]),
                Route(f"{API}/_provider-heartbeat", heartbeat, methods=["POST"]),
                Route(f"{API}/_provider-poll", poll, methods=["POST"]),
                Route(f"{API}/_provider-deregister", deregister, methods=["POST"]),
                Route(f"{task}/chunks", chunks, methods=["POST"]),
                Route(f"{task}/result", result, methods=["POST"]),
            ]
        )


def infer_task(
    task_id: str, llm: str, text: str, *, stream: bool = False, wake_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": task_id,
        "kind": "infer",
        "llm": llm,
        "createdAt": "now",
        "stream": stream,
        "request": {"model": llm, "messages": [{"role": "user", "content": text}]},
        "requestSize": 1,
        "wakeId": wake_id,
        "leaseSeconds": 60,
    }


def wake_task(task_id: str, llm: str) -> dict[str, Any]:
    return {"id": task_id, "kind": "wake", "llm": llm, "createdAt": "now", "leaseSeconds": 60}
