"""The relay's publisher API over one httpx.AsyncClient, with errors mapped to classes."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from natrelay.wire import (
    SESSION_HEADER,
    ChunkAck,
    ChunkBatch,
    ErrorCode,
    HeartbeatRequest,
    Paths,
    PollRequest,
    PollResponse,
    RegisterRequest,
    SessionRequest,
    SessionResponse,
    TaskResult,
)
from natrelay_publisher import tracing
from natrelay_publisher.errors import (
    KeyRefusedError,
    NameHeldError,
    RelayAuthError,
    RelayCallError,
    RelayUnavailableError,
    SessionLostError,
    TaskCancelledByClientError,
    TaskGoneError,
)

logger = logging.getLogger("natrelay.publisher")

REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# A long-poll may take its full wait; give the answer this much more.
POLL_SLACK_SECONDS = 10.0

# The relay's error codes a publisher branches on, and what they become here.
ERRORS: dict[str, type[RelayCallError]] = {
    ErrorCode.SESSION_NOT_FOUND: SessionLostError,
    # Our session is unknown to the relay (or, to it, another key's): register again.
    ErrorCode.SESSION_FORBIDDEN: SessionLostError,
    ErrorCode.NAME_TAKEN: NameHeldError,
    ErrorCode.NAME_OWNED: NameHeldError,
    ErrorCode.TASK_CANCELLED: TaskCancelledByClientError,
    ErrorCode.TASK_NOT_CLAIMED: TaskGoneError,
    ErrorCode.TASK_NOT_FOUND: TaskGoneError,
    ErrorCode.RESULT_CONFLICT: TaskGoneError,
}

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class Connectivity:
    """Logs one line when the relay becomes unreachable and one when it is back."""

    def __init__(self) -> None:
        self.down_since: float | None = None

    def failed(self, reason: str) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            logger.warning("relay unreachable: %s, retrying", reason)

    def succeeded(self, sent_at: float) -> None:
        # An answer to a request sent before the outage was seen proves nothing.
        if self.down_since is not None and sent_at > self.down_since:
            logger.info("relay reachable again after %.0f s", time.monotonic() - self.down_since)
            self.down_since = None


class KeyTrust:
    """Whether the relay accepted our token before, and one log line when it refuses it
    after all (and one when it accepts it again)."""

    def __init__(self) -> None:
        # Accepted in this process, or vouched for by an earlier run (its session file).
        self.accepted = False
        self.refused_since: float | None = None

    def refused(self, status: int, message: str) -> None:
        if self.refused_since is None:
            self.refused_since = time.monotonic()
            logger.warning(
                "the relay refused the publish token it had accepted (%d: %s). Probably the "
                "relay lost its keys (a `natrelay dev` restarted without its state, a new "
                "deployment) or the key was revoked or expired. Retrying with backoff; if it "
                "was revoked, put a new publisher key (natrelay keys create --role publisher) "
                "in relay.token and restart",
                status,
                message,
            )

    def succeeded(self) -> None:
        self.accepted = True
        if self.refused_since is not None:
            seconds = time.monotonic() - self.refused_since
            logger.info("the relay accepts the publish token again, after %.0f s", seconds)
            self.refused_since = None


class Backoff:
    """Exponential backoff with jitter: about 0.5 s, 1 s, 2 s, … capped at `cap`."""

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next(self) -> float:
        delay: float = min(self.cap, self.base * 2.0**self.attempt)
        self.attempt = min(self.attempt + 1, 30)
        return delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - jitter, not crypto

    def reset(self) -> None:
        self.attempt = 0


async def retrying(call: Callable[[], Awaitable[T]], *, give_up_after: float | None = None) -> T:
    """Call until the relay answers; RelayUnavailableError is retried with backoff."""
    backoff = Backoff()
    deadline = None if give_up_after is None else time.monotonic() + give_up_after
    while True:
        try:
            return await call()
        except RelayUnavailableError:
            delay = backoff.next()
            if deadline is not None and time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)


class RelayClient:
    """One method per endpoint of docs/protocol.md; raises the RelayCallError subclasses."""

    def __init__(
        self, url: str, token: str, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.url = url
        self.connectivity = Connectivity()
        self.trust = KeyTrust()
        # Requests sent and not answered yet.
        self.in_flight = 0
        self._client = httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=REQUEST_TIMEOUT,
            transport=transport,
            event_hooks=tracing.HOOKS,
        )

    async def register(self, request: RegisterRequest) -> SessionResponse:
        return await self._call(Paths.REGISTER, request, SessionResponse)

    async def heartbeat(self, request: HeartbeatRequest) -> SessionResponse:
        return await self._call(Paths.HEARTBEAT, request, SessionResponse)

    async def poll(self, request: PollRequest) -> PollResponse:
        timeout = httpx.Timeout(request.wait_seconds + POLL_SLACK_SECONDS, connect=10.0)
        return await self._call(Paths.POLL, request, PollResponse, timeout=timeout)

    async def claim(self, request: PollRequest) -> PollResponse:
        """A poll that does not wait (the doorbell's); a relay without the route: a poll."""
        try:
            return await self._call(Paths.CLAIM, request, PollResponse)
        except RelayCallError as exc:
            if exc.code not in (ErrorCode.NOT_FOUND, ErrorCode.METHOD_NOT_ALLOWED):
                raise
        return await self.poll(request.model_copy(update={"wait_seconds": 0}))

    async def deregister(self, request: SessionRequest) -> SessionResponse:
        return await self._call(Paths.DEREGISTER, request, SessionResponse)

    async def task_request(self, task_id: str, session_id: str) -> dict[str, Any]:
        """The request of a task this session claimed (too large to come with the poll).
        The session goes in a header: a URL reaches access logs, and it is a secret."""
        path = Paths.TASK_REQUEST.format(task_id=task_id)
        data = await self._send("GET", path, None, headers={SESSION_HEADER: session_id})
        if not isinstance(data, dict):
            raise RelayCallError(f"the request of task {task_id} is not a JSON object")
        return data

    async def post_chunks(self, task_id: str, batch: ChunkBatch) -> ChunkAck:
        return await self._call(Paths.TASK_CHUNKS.format(task_id=task_id), batch, ChunkAck)

    async def post_result(self, task_id: str, result: TaskResult) -> None:
        await self._send("POST", Paths.TASK_RESULT.format(task_id=task_id), result)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(
        self, path: str, body: BaseModel, answer: type[M], *, timeout: httpx.Timeout | None = None
    ) -> M:
        data = await self._send("POST", path, body, timeout=timeout)
        try:
            return answer.model_validate(data)
        except ValidationError as exc:
            raise RelayCallError(f"{path}: unexpected answer from the relay: {exc}") from exc

    async def _send(
        self,
        method: str,
        url: str,
        body: BaseModel | None,
        *,
        timeout: httpx.Timeout | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        payload = None if body is None else body.model_dump(mode="json", by_alias=True)
        sent_at = time.monotonic()
        self.in_flight += 1
        try:
            response = await self._client.request(
                method, url, json=payload, headers=headers, timeout=timeout or REQUEST_TIMEOUT
            )
        except httpx.HTTPError as exc:
            reason = f"{method} {self.url}{url}: {exc!r}"
            self.connectivity.failed(reason)
            raise RelayUnavailableError(reason) from exc
        finally:
            self.in_flight -= 1
        status = response.status_code
        message, code = _error(response)
        if status >= 500 or status == 429:
            reason = f"{method} {self.url}{url} answered {status}: {message}"
            self.connectivity.failed(reason)
            raise RelayUnavailableError(reason, status=status, code=code)
        self.connectivity.succeeded(sent_at)
        if status in (401, 403) and code != ErrorCode.SESSION_FORBIDDEN:
            refusal = f"the relay refused the publish token ({status}): {message}"
            if self.trust.accepted:
                self.trust.refused(status, message)
                raise KeyRefusedError(refusal, status=status, code=code)
            raise RelayAuthError(refusal, status=status, code=code)
        self.trust.succeeded()
        if not response.is_success:
            error = ERRORS.get(code or "", RelayCallError)
            text = f"{method} {url} answered {status} {code}: {message}"
            if status == 404 and code in (None, ErrorCode.NOT_FOUND):
                text += f"; is relay.url the relay's own URL? ({self.url})"
            raise error(text, status=status, code=code)
        try:
            return response.json()
        except ValueError as exc:
            raise RelayCallError(f"{method} {url}: the relay answered invalid JSON") from exc


def _error(response: httpx.Response) -> tuple[str, str | None]:
    if response.is_success:
        return "", None
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return " ".join(response.text.split())[:300], None
    if isinstance(error, dict):
        return str(error.get("message", "")), error.get("code")
    return str(error), None
