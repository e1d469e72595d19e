"""Running one infer request on its provider and posting the answer to the relay: a result,
or chunk batches then a result. `TaskPoster` posts every task's answer (a wake's too)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from natrelay.wire import ChunkBatch, Endpoint, ErrorCode, ErrorInfo, TaskResult
from natrelay_publisher.errors import (
    BackendFailedError,
    RelayCallError,
    RelayUnavailableError,
    TaskCancelledByClientError,
    TaskGoneError,
    TaskMovedError,
)
from natrelay_publisher.providers import Provider
from natrelay_publisher.providers.base import EndpointProvider, servable
from natrelay_publisher.redact import redact
from natrelay_publisher.relay import RelayClient, retrying
from natrelay_publisher.types import Chunk, JSONObject

logger = logging.getLogger("natrelay.publisher")

FLUSH_SECONDS = 0.05
FLUSH_BYTES = 32 * 1024
QUEUE_CHUNKS = 4096
CHUNK_RETRY_SECONDS = 60.0
RESULT_RETRY_SECONDS = 300.0


class _End:
    """Marks the end of the backend's stream in the queue."""


_END = _End()


class TaskPoster:
    """Posts one task's chunks and result; after a result or a cancellation, posts nothing."""

    def __init__(
        self,
        relay: RelayClient,
        session_id: Callable[[], str],
        task_id: str,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self.relay = relay
        self.session_id = session_id
        self.task_id = task_id
        self.finished = False
        # Called once the answer is known, before it is posted: the backend is free.
        self.on_done = on_done

    async def chunks(self, seq: int, chunks: list[Chunk]) -> None:
        async def post() -> None:
            batch = ChunkBatch(provider_session_id=self.session_id(), seq=seq, chunks=chunks)
            await self.relay.post_chunks(self.task_id, batch)

        try:
            await retrying(post, give_up_after=CHUNK_RETRY_SECONDS)
        except TaskCancelledByClientError:
            self.finished = True
            raise

    async def result(
        self,
        *,
        status: int = 200,
        body: Any = None,
        chunk_count: int = 0,
        give_up_after: float = RESULT_RETRY_SECONDS,
    ) -> None:
        await self._post(status, body, None, chunk_count, give_up_after)

    async def fail(
        self,
        code: ErrorCode,
        message: str,
        *,
        status: int | None = None,
        give_up_after: float = RESULT_RETRY_SECONDS,
    ) -> int:
        """Post the task's failure, with its code's status unless given one (a backend's
        own); returns the status posted. Its type is its code's, as the relay answers the
        client (one table: ErrorCode), so the task view and the answer say the same."""
        status = status or code.status
        # The last stop before the client: whatever a plugin wrote, no URL secrets.
        error = ErrorInfo(message=redact(message), code=code, type=code.type.value)
        await self._post(status, None, error, 0, give_up_after)
        return status

    async def _post(
        self, status: int, body: Any, error: ErrorInfo | None, chunk_count: int, give_up: float
    ) -> None:
        if self.finished:
            return
        self.finished = True
        if self.on_done is not None:
            self.on_done()

        async def post() -> None:
            result = TaskResult(
                provider_session_id=self.session_id(),
                status=status,
                body=body,
                error=error,
                chunk_count=chunk_count,
            )
            await self.relay.post_result(self.task_id, result)

        try:
            await retrying(post, give_up_after=give_up)
        except RelayUnavailableError as exc:
            logger.error("task %s: could not post its result: %s", self.task_id, exc)
        except TaskMovedError:
            logger.warning(
                "task %s: the relay gave it to another member while this publisher was "
                "silent (frozen or cut off): its answer is dropped",
                self.task_id,
            )
        except TaskGoneError as exc:
            logger.warning("task %s: result not accepted: %s", self.task_id, exc)
        except RelayCallError as exc:
            logger.warning("task %s: result refused: %s", self.task_id, exc)
            if error is None:
                # E.g. an answer too large for the relay: the client must still hear of it.
                self.finished = False
                await self.fail(
                    ErrorCode.BACKEND_ERROR,
                    f"the relay refused the answer: {exc.message}",
                    give_up_after=give_up,
                )


async def run_infer(
    provider: Provider,
    request: JSONObject,
    stream: bool,
    poster: TaskPoster,
    endpoint: Endpoint = Endpoint.CHAT,
) -> int:
    """Run one request to `endpoint` on `provider` and post the answer; returns the
    status posted."""
    if endpoint is not Endpoint.CHAT and endpoint not in servable(provider):
        message = f"provider type {provider.type_name!r} does not serve {endpoint.path}"
        return await poster.fail(ErrorCode.ENDPOINT_NOT_SERVED, message)
    if not stream:
        try:
            reply = await (
                provider.complete(request)
                if endpoint is Endpoint.CHAT
                else cast(EndpointProvider, provider).send(endpoint, request)
            )
        except BackendFailedError as exc:
            return await poster.fail(exc.code, exc.message, status=exc.status)
        await poster.result(status=reply.status, body=reply.body)
        return reply.status
    if endpoint is Endpoint.CHAT:
        return await relay_stream(provider.stream(request), poster)
    return await relay_stream(
        cast(EndpointProvider, provider).send_stream(endpoint, request), poster
    )


def usage_in(chunk: Chunk) -> JSONObject | None:
    """The `usage` a stream event carries: at its top (chat and completions chunks, the
    Messages API's `message_delta`) or in the object it wraps (the Responses API's
    `response.completed`, the Messages API's `message_start`)."""
    for holder in (chunk, chunk.get("response"), chunk.get("message")):
        if isinstance(holder, dict) and isinstance(holder.get("usage"), dict):
            found: JSONObject = holder["usage"]
            return found
    return None


async def relay_stream(chunks: AsyncIterator[Chunk], poster: TaskPoster) -> int:
    """Post `chunks` in batches (by time and size, in order), then the final result."""
    queue: asyncio.Queue[Chunk | _End | BackendFailedError] = asyncio.Queue(QUEUE_CHUNKS)
    reader = asyncio.create_task(_read(chunks, queue))
    seq, usage = 0, cast(JSONObject | None, None)
    try:
        while True:
            # the first token goes out at once (time to first token); later ones are batched
            batch, end = await _next_batch(queue, 0.0 if seq == 0 else FLUSH_SECONDS)
            if batch:
                for chunk in batch:  # later counts win (a message_delta's output_tokens)
                    found = usage_in(chunk)
                    if found:
                        usage = {**(usage or {}), **found}
                await poster.chunks(seq, batch)
                seq += 1
            if end is not None:
                break
    except TaskCancelledByClientError:
        logger.info("task %s: cancelled by the client, backend request aborted", poster.task_id)
        return 499
    except (TaskGoneError, RelayUnavailableError) as exc:
        logger.warning("task %s: stream aborted: %s", poster.task_id, exc)
        return 502
    except RelayCallError as exc:
        logger.warning("task %s: stream aborted: %s", poster.task_id, exc)
        return await poster.fail(
            ErrorCode.BACKEND_ERROR, f"the relay refused a chunk batch: {exc.message}"
        )
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    if isinstance(end, BackendFailedError):
        return await poster.fail(end.code, end.message, status=end.status)
    await poster.result(status=200, body={"usage": usage} if usage else None, chunk_count=seq)
    return 200


async def _read(
    chunks: AsyncIterator[Chunk], queue: asyncio.Queue[Chunk | _End | BackendFailedError]
) -> None:
    try:
        async for chunk in chunks:
            await queue.put(chunk)
        await queue.put(_END)
    except BackendFailedError as exc:
        await queue.put(exc)
    except Exception as exc:  # a provider's bug must still end the task with an error
        await queue.put(BackendFailedError(f"the provider failed: {exc!r}"))
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


async def _next_batch(
    queue: asyncio.Queue[Chunk | _End | BackendFailedError], flush_seconds: float
) -> tuple[list[Chunk], _End | BackendFailedError | None]:
    first = await queue.get()
    if not isinstance(first, dict):
        return [], first
    batch, size = [first], len(json.dumps(first))
    deadline = asyncio.get_running_loop().time() + flush_seconds
    while size < FLUSH_BYTES:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            break
        try:
            async with asyncio.timeout(remaining):
                item = await queue.get()
        except TimeoutError:
            break
        if not isinstance(item, dict):
            return batch, item
        batch.append(item)
        size += len(json.dumps(item))
    return batch, None
