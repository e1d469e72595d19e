"""The provider plugin contract and the helpers the built-in providers share."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httpx
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from natrelay.wire import Endpoint, ErrorCode
from natrelay_publisher import tracing
from natrelay_publisher.errors import BackendFailedError
from natrelay_publisher.redact import describe, public_url
from natrelay_publisher.types import Chunk, JSONObject, ProviderSettings

logger = logging.getLogger("natrelay.publisher")

# The longest an availability check may take; the slot's Health asks for less.
AVAILABILITY_TIMEOUT_SECONDS = 60.0
# Generation can be slow (the provider's timeoutSeconds); connecting must not be.
CONNECT_TIMEOUT_SECONDS = 10.0


class ProviderOptions(BaseModel):
    """Base of a provider's `options` model (camelCase keys, unknown keys refused)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


@dataclass(frozen=True)
class BackendReply:
    status: int
    body: Any


class Provider(Protocol):
    """Talks to one backend. `complete` and `stream` raise BackendFailedError on any failure.

    It is built from its entry of the config (`ProviderSettings`); `requires` names the
    fields of that entry this type needs (e.g. base_url, model).
    `stream` yields OpenAI `chat.completion.chunk` objects.

    A provider that serves more than chat also has what `EndpointProvider` adds:
    `endpoints` (what it can serve at all), `default_endpoints` (what it publishes when
    the config names none) and `send` / `send_stream` for a request to any of them.
    """

    type_name: ClassVar[str]
    Options: ClassVar[type[ProviderOptions]]
    requires: ClassVar[tuple[str, ...]]

    name: str
    model: str

    def __init__(self, config: ProviderSettings) -> None: ...

    async def available(self) -> bool: ...

    async def models(self) -> list[str]: ...

    async def complete(self, request: JSONObject) -> BackendReply: ...

    def stream(self, request: JSONObject) -> AsyncIterator[Chunk]: ...

    async def aclose(self) -> None: ...


class EndpointProvider(Provider, Protocol):
    """A provider of more APIs than chat (`Endpoint`). `send_stream` yields the stream's
    events as objects: chunks for chat and completions; for responses and messages each
    event's data, whose `type` names the event."""

    endpoints: ClassVar[frozenset[Endpoint]]
    default_endpoints: ClassVar[frozenset[Endpoint]]

    async def send(self, endpoint: Endpoint, request: JSONObject) -> BackendReply: ...

    def send_stream(self, endpoint: Endpoint, request: JSONObject) -> AsyncIterator[Chunk]: ...


CHAT_ONLY = frozenset({Endpoint.CHAT})


def servable(provider: type[Provider] | Provider) -> frozenset[Endpoint]:
    """The endpoints a provider type can serve (chat only, for one that says nothing)."""
    endpoints: frozenset[Endpoint] = getattr(provider, "endpoints", CHAT_ONLY)
    return endpoints


def default_endpoints(provider: type[Provider] | Provider) -> frozenset[Endpoint]:
    """The endpoints a provider publishes when its config names none."""
    endpoints: frozenset[Endpoint] = getattr(provider, "default_endpoints", servable(provider))
    return endpoints


def backend_client(config: ProviderSettings) -> httpx.AsyncClient:
    """One client per backend: base URL, API key, the provider's read timeout."""
    headers = {}
    if config.api_key is not None:
        headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
    timeout = httpx.Timeout(config.timeout_seconds, connect=CONNECT_TIMEOUT_SECONDS)
    return httpx.AsyncClient(
        base_url=config.base_url or "",
        headers=headers,
        timeout=timeout,
        event_hooks=tracing.HOOKS,  # the task's traceparent to the backend
    )


def error_message(status: int, body: bytes | str) -> str:
    """The backend's own error message, from a JSON error (OpenAI's, Ollama's, FastAPI's
    `detail`). Any other body (an HTML page, a proxy's text: it may name internal hosts)
    never leaves this machine: it is logged at DEBUG, and the message says so."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    message: Any = None
    if isinstance(data, dict):
        message = data.get("error", data.get("message", data.get("detail")))
        if isinstance(message, dict):
            message = message.get("message", message)
    if message is None and text.strip():
        logger.debug("the backend answered %d: %s", status, " ".join(text.split())[:2000])
        return f"the backend answered {status} (its body is in the publisher's debug log)"
    return str(message) if message else f"HTTP {status}"


# The backend's address is the publisher's business: clients read the provider's name.
def unreachable(name: str, exc: Exception, timeout: float) -> BackendFailedError:
    if _silent(exc):
        return BackendFailedError(
            f"the backend of {name} did not answer within {timeout:g} s", status=504
        )
    return BackendFailedError(f"cannot reach the backend of {name}: {describe(exc)}")


def broken_stream(name: str, exc: Exception, timeout: float) -> BackendFailedError:
    if _silent(exc):
        return BackendFailedError(
            f"the backend of {name} sent nothing for {timeout:g} s mid-stream", status=504
        )
    return BackendFailedError(f"the stream of the backend of {name} broke: {describe(exc)}")


def _silent(exc: Exception) -> bool:
    """Connected, then nothing came: a hung backend, not an unreachable one."""
    return isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout)


# `data: [DONE]` while a choice has had no finish_reason: the backend stopped an answer
# halfway. llama-cpp-python's server does so when another request comes in while it streams
# (its `interrupt_requests`, on by default: a second task, or anything asking GET /v1/models).
INTERRUPTED = (
    "`data: [DONE]` before the answer's finish_reason: the backend cut it short; "
    "llama-cpp-python's server does when another request arrives (publish it with "
    "maxConcurrency: 1, or start it with --interrupt_requests False)"
)


def closed_early(missing: str) -> BackendFailedError:
    return BackendFailedError(f"the backend closed the stream early ({missing})")


def failed_status(
    response: httpx.Response, body: bytes, endpoint: Endpoint = Endpoint.CHAT
) -> BackendFailedError:
    status = response.status_code
    if endpoint is not Endpoint.CHAT and status in (404, 405):
        return BackendFailedError(
            f"the backend does not serve {endpoint.path} for this model (it answered "
            f"{status}: {error_message(status, body)})",
            code=ErrorCode.ENDPOINT_NOT_SERVED,
        )
    return BackendFailedError(
        error_message(status, body), status=status if 400 <= status <= 599 else 502
    )


def parse_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise BackendFailedError(f"the backend answered invalid JSON: {exc}") from exc


# Streams whose events are named (`event: <type>`), and carry no chat chunks.
NAMED_EVENTS = frozenset({Endpoint.RESPONSES, Endpoint.MESSAGES})


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str | None, str]]:
    """Each server-sent event as (its `event` name or None, its data: multi-line data
    joined with newlines); comments and events without data are skipped."""
    event: str | None = None
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
    if data:
        yield event, "\n".join(data)


def stream_event(data: str, event: str | None) -> Chunk:
    """One event's data as an object. Of a chat or completions stream (`event` None), an
    error object ends it (BackendFailedError); a named event is the backend's to send on
    as it is (an `error` event reaches the client as one), its name kept in `type`."""
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise BackendFailedError(f"the backend sent invalid JSON in its stream: {exc}") from exc
    if not isinstance(chunk, dict):
        raise BackendFailedError("the backend sent a stream event that is not an object")
    if event is None:
        if "error" in chunk and "choices" not in chunk:
            raise BackendFailedError(error_message(502, data))
    elif "type" not in chunk:
        chunk["type"] = event  # as the anthropic SDK reads such an event
    return chunk


# The events that end a named-event stream properly (an `error` event ends it too: the
# client reads the backend's error).
_LAST_EVENTS = {
    Endpoint.RESPONSES: frozenset(
        {"response.completed", "response.failed", "response.incomplete", "error"}
    ),
    Endpoint.MESSAGES: frozenset({"message_stop", "error"}),
}


class StreamEnd:
    """Whether a stream without `[DONE]` still ended properly: chat and completions
    when every choice finished; responses and messages with their last event."""

    def __init__(self, endpoint: Endpoint = Endpoint.CHAT) -> None:
        self.last = _LAST_EVENTS.get(endpoint)
        self.open: set[object] = set()
        self.done: set[object] = set()
        self.ended = False

    @property
    def missing(self) -> str:
        if self.last is not None:
            return f"no {' or '.join(sorted(self.last))} event"
        return "no `data: [DONE]` and no finish_reason"

    def see(self, chunk: Chunk) -> None:
        if self.last is not None:
            self.ended = self.ended or chunk.get("type") in self.last
            return
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            if choice.get("finish_reason"):
                self.open.discard(index)
                self.done.add(index)
            elif index not in self.done:
                self.open.add(index)

    @property
    def proper(self) -> bool:
        if self.last is not None:
            return self.ended
        return bool(self.done) and not self.open


def forwarded(request: JSONObject, model: str, *, stream: bool) -> JSONObject:
    """The request to forward: the backend's model, `stream` set to how we will read it."""
    body = dict(request)
    body["model"] = model
    if stream or "stream" in body:
        body["stream"] = stream
    return body


class HttpBackend:
    """What the HTTP providers share: one client, availability, and plain JSON calls."""

    Options: ClassVar[type[ProviderOptions]] = ProviderOptions
    requires: ClassVar[tuple[str, ...]] = ("base_url", "model")
    # GET this path answering 2xx means the backend is up (it also lists the models).
    models_path: ClassVar[str]
    # What a 404 of that path most likely means, for the log line that says so.
    not_found_hint: ClassVar[str] = ""

    def __init__(self, config: ProviderSettings) -> None:
        self.name = config.name
        self.model = config.model or ""
        self.base_url = config.base_url or ""
        self.timeout = config.timeout_seconds
        self._client = backend_client(config)
        # Why the last availability check failed, for this machine's log (its URL, its
        # status: the user's own backend, shown where it is safe to).
        self.unavailable_because: str | None = None

    async def available(self) -> bool:
        url = public_url(str(self._client.build_request("GET", self.models_path).url))
        try:
            response = await self._client.get(
                self.models_path, timeout=AVAILABILITY_TIMEOUT_SECONDS
            )
        except httpx.HTTPError as exc:
            self.unavailable_because = f"GET {url}: {describe(exc)}"
            return False
        if response.is_success:
            self.unavailable_because = None
            return True
        why = f"GET {url} answered {response.status_code} {response.reason_phrase}"
        if response.status_code == 404 and self.not_found_hint:
            why += f": {self.not_found_hint}"
        self.unavailable_because = why
        return False

    async def _listing(self) -> Any:
        return parse_json(
            await self._call("GET", self.models_path, timeout=AVAILABILITY_TIMEOUT_SECONDS)
        )

    async def _call(
        self,
        method: str,
        path: str,
        json: JSONObject | None = None,
        endpoint: Endpoint = Endpoint.CHAT,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request; unreachable or non-2xx becomes BackendFailedError."""
        try:
            response = await self._client.request(method, path, json=json, **kwargs)
        except httpx.HTTPError as exc:
            raise unreachable(self.name, exc, self.timeout) from exc
        if not response.is_success:
            raise failed_status(response, response.content, endpoint)
        return response

    async def _post(self, endpoint: Endpoint, path: str, request: JSONObject) -> BackendReply:
        """The request, as the client sent it but for the backend's model, to `path`."""
        body = forwarded(request, self.model, stream=False)
        response = await self._call("POST", path, body, endpoint)
        return BackendReply(response.status_code, parse_json(response))

    async def _post_stream(
        self, endpoint: Endpoint, path: str, request: JSONObject
    ) -> AsyncIterator[Chunk]:
        """The request streamed from `path`: each server-sent event's data, in order."""
        body = forwarded(request, self.model, stream=True)
        named = endpoint in NAMED_EVENTS
        started = False
        end = StreamEnd(endpoint)
        try:
            async with self._client.stream("POST", path, json=body) as response:
                if not response.is_success:
                    raise failed_status(response, await response.aread(), endpoint)
                started = True
                async for event, data in sse_events(response.aiter_lines()):
                    if data.strip() == "[DONE]":
                        if end.open:
                            raise closed_early(INTERRUPTED)
                        return
                    chunk = stream_event(data, event if named else None)
                    end.see(chunk)
                    yield chunk
        except httpx.HTTPError as exc:
            raise (broken_stream if started else unreachable)(self.name, exc, self.timeout) from exc
        if not end.proper:
            # A body that just stops is a backend that died or a proxy that cut it: the
            # client must not take the text so far for the whole answer.
            raise closed_early(end.missing)

    async def aclose(self) -> None:
        await self._client.aclose()
