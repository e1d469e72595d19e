"""A scripted publisher for server tests: polls in a thread and answers with a function.

The real publisher has its own tests; this one lets server tests control exactly
what a publisher sends, and when. What it sends is built with the wire models and what
it reads back is parsed with them, so it cannot drift from the protocol unnoticed;
`post` sends a raw body, for requests the relay must refuse.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel

from natrelay.wire import (
    AgentSpec,
    ChunkBatch,
    Paths,
    PollRequest,
    PollResponse,
    ProviderSpec,
    RegisterRequest,
    SessionResponse,
    TaskResult,
)

Answer = Callable[[dict[str, Any], "ScriptedPublisher"], None]


def echo_answer(task: dict[str, Any], pub: ScriptedPublisher) -> None:
    """Reply with the last user message; streamed as one chunk per word."""
    text = task["request"]["messages"][-1]["content"]
    if task["stream"]:
        words = text.split(" ")
        for seq, word in enumerate(words):
            delta = word if seq == 0 else " " + word
            pub.chunk(
                task["id"],
                seq,
                [
                    {
                        "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": {"content": delta}}],
                    }
                ],
            )
        pub.result(task["id"], {"status": 200, "body": None, "chunkCount": len(words)})
    else:
        pub.result(
            task["id"],
            {
                "status": 200,
                "body": {
                    "object": "chat.completion",
                    "id": "x",
                    "model": task["llm"],
                    "created": 0,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": text},
                        }
                    ],
                },
            },
        )


@dataclass
class ScriptedPublisher:
    url: str
    token: str
    providers: list[dict[str, Any]]
    answer: Answer = echo_answer
    session_id: str | None = None
    agents: list[dict[str, Any]] = field(default_factory=list)
    seen: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _answering: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=40
        )

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST a raw body to `/api/v1/llms/{path}` (e.g. `_provider-register`)."""
        return self.http.post(f"{Paths.LLMS}/{path}", json=body)

    def send(self, path: str, request: BaseModel) -> httpx.Response:
        body = request.model_dump(mode="json", by_alias=True, exclude_none=True)
        return self.http.post(path, json=body)

    def register(self) -> str:
        request = RegisterRequest(
            providers=[ProviderSpec.model_validate(p) for p in self.providers],
            provider_session_id=self.session_id,
            agents=[AgentSpec.model_validate(a) for a in self.agents],
        )
        resp = self.send(Paths.REGISTER, request)
        resp.raise_for_status()
        self.session_id = SessionResponse.model_validate(resp.json()).provider_session_id
        return self.session_id

    def chunk(self, task_id: str, seq: int, chunks: list[dict[str, Any]]) -> httpx.Response:
        batch = ChunkBatch(provider_session_id=self._session(), seq=seq, chunks=chunks)
        return self.send(Paths.TASK_CHUNKS.format(task_id=task_id), batch)

    def result(self, task_id: str, result: dict[str, Any]) -> httpx.Response:
        """Post `result`: the fields of a TaskResult but the session (camelCase)."""
        body = TaskResult.model_validate({"providerSessionId": self._session(), **result})
        return self.send(Paths.TASK_RESULT.format(task_id=task_id), body)

    def poll_once(self, wait: float = 1.0, max_tasks: int = 8) -> list[dict[str, Any]]:
        """One poll; the tasks as the wire models read them (camelCase keys)."""
        request = PollRequest(
            provider_session_id=self._session(), wait_seconds=wait, max_tasks=max_tasks
        )
        resp = self.send(Paths.POLL, request)
        resp.raise_for_status()
        tasks = PollResponse.model_validate(resp.json()).tasks
        return [task.model_dump(mode="json", by_alias=True) for task in tasks]

    def _session(self) -> str:
        assert self.session_id is not None, "register first"
        return self.session_id

    def _run(self) -> None:
        while not self._stop.is_set():
            for task in self.poll_once():
                self.seen.append(task)
                answering = threading.Thread(target=self.answer, args=(task, self), daemon=True)
                self._answering.append(answering)
                answering.start()

    def start(self) -> ScriptedPublisher:
        if self.session_id is None:
            self.register()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        # Its threads end here, not in a later test (which their errors would fail).
        for thread in [self._thread, *self._answering]:
            if thread is not None:
                thread.join(timeout=60)
        self.http.close()

    def __enter__(self) -> ScriptedPublisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
