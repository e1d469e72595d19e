"""The provider plugin contract and the helpers the built-in providers share."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import httpx
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from natrelay_publisher.errors import BackendFailedError
from natrelay_publisher.redact import describe

if TYPE_CHECKING:
    from natrelay_publisher.config import ProviderConfig
    from natrelay_publisher.types import Chunk, JSONObject

AVAILABILITY_TIMEOUT_SECONDS = 5.0
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

    `requires` names the ProviderConfig fields this type needs (e.g. base_url, model).
    `stream` yields OpenAI `chat.completion.chunk` objects.
    """

    type_name: ClassVar[str]
    Options: ClassVar[type[ProviderOptions]]
    requires: ClassVar[tuple[str, ...]]

    name: str
    model: str

    def __init__(self, config: ProviderConfig) -> None: ...

    async def available(self) -> bool: ...

    async def models(self) -> list[str]: ...

    async def complete(self, request: JSONObject) -> BackendReply: ...

    def stream(self, request: JSONObject) -> AsyncIterator[Chunk]: ...

    async def aclose(self) -> None: ...


def backend_client(config: ProviderConfig) -> httpx.AsyncClient:
    """One client per backend: base URL, API key, the provider's read timeout."""
    headers = {}
    if config.api_key is not None:
        headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
    timeout = httpx.Timeout(config.timeout_seconds, connect=CONNECT_TIMEOUT_SECONDS)
    return httpx.AsyncClient(base_url=config.base_url or "", headers=headers, timeout=timeout)


def error_message(status: int, body: bytes | str) -> str:
    """The backend's own error message, whatever shape it came in."""
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
    if message is None:
        message = " ".join(text.split())[:500]
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


def closed_early(missing: str) -> BackendFailedError:
    return BackendFailedError(f"the backend closed the stream early ({missing})")


def failed_status(response: httpx.Response, body: bytes) -> BackendFailedError:
    status = response.status_code
    return BackendFailedError(
        error_message(status, body), status=status if 400 <= status <= 599 else 502
    )


def parse_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise BackendFailedError(f"the backend answered invalid JSON: {exc}") from exc


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

    def __init__(self, config: ProviderConfig) -> None:
        self.name = config.name
        self.model = config.model or ""
        self.base_url = config.base_url or ""
        self.timeout = config.timeout_seconds
        self._client = backend_client(config)

    async def available(self) -> bool:
        try:
            response = await self._client.get(
                self.models_path, timeout=AVAILABILITY_TIMEOUT_SECONDS
            )
        except httpx.HTTPError:
            return False
        return response.is_success

    async def _listing(self) -> Any:
        return parse_json(
            await self._call("GET", self.models_path, timeout=AVAILABILITY_TIMEOUT_SECONDS)
        )

    async def _call(
        self, method: str, path: str, json: JSONObject | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One request; unreachable or non-2xx becomes BackendFailedError."""
        try:
            response = await self._client.request(method, path, json=json, **kwargs)
        except httpx.HTTPError as exc:
            raise unreachable(self.name, exc, self.timeout) from exc
        if not response.is_success:
            raise failed_status(response, response.content)
        return response

    async def aclose(self) -> None:
        await self._client.aclose()
