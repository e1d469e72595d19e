"""Public rows: the relay calls their upstream (any OpenAI-compatible server) itself.

`Upstreams.relay` is the one call path: an OpenAI request body, streamed or not, to the
upstream of a row, under the caller's key limits and usage like a published row. The
upstream's API key is read from where the row says it is kept (a short cache), sent in
the Authorization header only, and never put in an answer, an error or a log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from natrelay.errors import ForbiddenError, InvalidRequestError, UpstreamError
from natrelay.service.access import Principal
from natrelay.service.context import Context
from natrelay.service.ids import new_task_id
from natrelay.service.metering import (
    Request,
    ask_usage,
    text_bytes,
    usage_hidden,
    without_usage,
)
from natrelay.service.payloads import clip, dumps, public_model
from natrelay.service.redaction import redact, redact_bytes
from natrelay.service.usage import Admission, Usage
from natrelay.store import LlmRecord, SecretMissingError, SecretReader, SecretWriteError
from natrelay.wire import Endpoint, secret_name

if TYPE_CHECKING:
    # Imported where a public row is called: not a cost for every cold start to pay.
    import httpx

log = logging.getLogger("natrelay.service")

CONNECT_SECONDS = 10.0
MAX_MESSAGE = 1000
# The endpoint of an upstream path (`/chat/completions`: the relay's path under /v1).
_ENDPOINTS = {e.path.removeprefix("/v1"): e for e in Endpoint}


@dataclass(frozen=True)
class UpstreamReply:
    """A plain answer (`body`), or a stream's chunk objects (`chunks`), in that order.
    `settle`: the plain answer's usage, to record once it is sent (None: recorded)."""

    status: int
    body: Any = None
    chunks: AsyncIterator[Any] | None = None
    settle: Callable[[], Awaitable[None]] | None = None


def _failure(
    row: LlmRecord, message: str, status: int = 502, *, retryable: bool = True
) -> UpstreamError:
    return UpstreamError(
        f"the upstream of {row.name!r} {message}",
        status=status,
        unavailable=status >= 502,
        retryable=retryable,
    )


def _message(response_text: str) -> str:
    try:
        data = json.loads(response_text)
    except ValueError:
        return " ".join(response_text.split())
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return " ".join(response_text.split())


class Upstreams:
    def __init__(self, ctx: Context, usage: Usage) -> None:
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.usage = usage
        secrets = ctx.stores.secrets
        self.secrets = secrets or SecretReader(ctx.settings.region, ctx.settings.secrets_endpoint)
        self._keys: dict[str, tuple[str, float]] = {}
        # one client per event loop (Mangum and tests may run several, one after another)
        self._http: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None

    def _client(self) -> httpx.AsyncClient:
        import httpx  # noqa: PLC0415 - only public rows need it (see the import above)

        loop = asyncio.get_running_loop()
        if self._http is None or self._http[0] is not loop:
            client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
            self._http = (loop, client)
        return self._http[1]

    async def read_key(self, ref: dict[str, Any]) -> str:
        """The API key kept where `ref` says (cached); SecretMissingError if it cannot be
        read."""
        cache_key = json.dumps(ref, sort_keys=True)
        now = self.clock()
        cached = self._keys.get(cache_key)
        if cached is not None and now - cached[1] < self.settings.secret_cache_seconds:
            return cached[0]
        key = await self.secrets.read(secrets_manager=ref.get("secretsManager"), ssm=ref.get("ssm"))
        self._keys[cache_key] = (key, now)
        return key

    async def put_key(self, name: str, value: str) -> bool:
        """Create or update the secret `name` (True: created), where this relay may
        write secrets; the next call that needs it reads the new value."""
        if not self.settings.secrets_writable:
            raise ForbiddenError(
                "this relay does not write secrets (its role may only read them): create "
                f"it with `aws secretsmanager create-secret --name {name}` (put-secret-value "
                "to change it)"
            )
        try:
            created = await self.secrets.put(secret_name(name), value)
        except ValueError as exc:
            raise InvalidRequestError(str(exc), param="name") from None
        except SecretWriteError as exc:
            raise UpstreamError(f"the secret {name} could not be written ({exc})") from None
        self._keys.pop(json.dumps({"secretsManager": name}, sort_keys=True), None)
        log.info("secret %s %s", name, "created" if created else "updated")
        return created

    async def _headers(self, row: LlmRecord) -> tuple[dict[str, str], str | None]:
        if row.api_key_ref is None:
            return {}, None
        try:
            key = await self.read_key(row.api_key_ref)
        except SecretMissingError as exc:
            where = row.api_key_ref.get("secretsManager") or row.api_key_ref.get("ssm")
            log.warning("the API key of %s cannot be read from %s: %s", row.name, where, exc)
            raise _failure(
                row, f"cannot be called: its API key cannot be read ({exc})", retryable=False
            ) from None
        return {"Authorization": f"Bearer {key}"}, key

    def _timeout(self, row: LlmRecord) -> httpx.Timeout:
        import httpx  # noqa: PLC0415

        seconds = row.timeout_seconds or self.settings.upstream_timeout_seconds
        return httpx.Timeout(seconds, connect=min(CONNECT_SECONDS, seconds))

    async def relay(
        self, principal: Principal, row: LlmRecord, path: str, body: dict[str, Any], *, stream: bool
    ) -> UpstreamReply:
        """Send `body` (an OpenAI request for `path`, e.g. `/chat/completions`) to the
        row's upstream, as the row's model. Raises UpstreamError (502, 504, or the
        upstream's 4xx with its message) and the key's RateLimitError."""
        if not row.base_url:
            raise InvalidRequestError(f"{row.name!r} has no upstream", param="model")
        now = self.clock()
        seconds = row.timeout_seconds or self.settings.upstream_timeout_seconds
        # a stream asks for its usage (the client sees it only if it asked too)
        endpoint = _ENDPOINTS.get(path, Endpoint.CHAT)
        sent = ask_usage(body, endpoint, stream)
        asked = Request.of(dumps(sent))
        admission = await self.usage.admit(
            principal, new_task_id(now), now + seconds + 60, asked.reservation()
        )
        try:
            headers, key = await self._headers(row)
            request = self._client().build_request(
                "POST",
                row.base_url + path,
                json={**sent, "model": row.model},
                headers=headers,
                timeout=self._timeout(row),
            )
            response = await self._send(row, request)
            if response.status_code >= 400:
                text = redact((await response.aread()).decode("utf-8", "replace"), key)
                await response.aclose()
                raise self._refused(row, response.status_code, text)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.usage.record_call(principal, admission, row.name, body=None, error=True)
            raise
        if stream:
            chunks = self._chunks(
                _Call(principal, admission, row, asked, usage_hidden(endpoint, body)),
                response,
                key,
            )
            return UpstreamReply(response.status_code, chunks=chunks)
        try:
            data = json.loads(redact_bytes(await response.aread(), key))
        except ValueError:
            data = None
        finally:
            await response.aclose()
        ok = isinstance(data, dict)
        settle = partial(
            self.usage.record_call,
            principal,
            admission,
            row.name,
            body=data,
            error=not ok,
            request=asked,
            relayed=text_bytes(data),
        )
        # As on the fast path: a key with a concurrency or token limit settles its usage
        # before the answer goes out (its next request must see it); others just after.
        first = principal.concurrency is not None or principal.tokens_per_day is not None
        if first or not ok:
            await settle()
        if not ok:
            raise _failure(
                row, "answered with something that is not a JSON object", retryable=False
            )
        body = public_model(data, row.name)
        return UpstreamReply(response.status_code, body=body, settle=None if first else settle)

    async def _send(self, row: LlmRecord, request: httpx.Request) -> httpx.Response:
        import httpx  # noqa: PLC0415

        try:
            return await self._client().send(request, stream=True)
        except httpx.TimeoutException:
            seconds = row.timeout_seconds or self.settings.upstream_timeout_seconds
            # it may still be running the request: a retry would run it again
            raise _failure(
                row, f"did not answer within {seconds:g} s", 504, retryable=False
            ) from None
        except httpx.HTTPError as exc:
            log.warning("the upstream of %s cannot be reached: %s", row.name, type(exc).__name__)
            raise _failure(row, f"cannot be reached ({type(exc).__name__})") from None

    def _refused(self, row: LlmRecord, status: int, text: str) -> UpstreamError:
        """The error for an upstream's refusal; `text` (its body) is redacted already, so
        no cut can leave part of a key in it."""
        message = clip(_message(text), MAX_MESSAGE)
        if status in (401, 403):
            log.warning("the upstream of %s refused the relay's API key (%d)", row.name, status)
            return _failure(
                row, f"refused the relay's API key ({status}); ask an admin", retryable=False
            )
        if status >= 500:
            return _failure(row, f"failed ({status}): {message}")
        return UpstreamError(
            message or f"the upstream of {row.name!r} answered {status}", status=status
        )

    async def _chunks(
        self, call: _Call, response: httpx.Response, key: str | None
    ) -> AsyncIterator[Any]:
        """The stream's chunk objects, naming the row, each redacted of the API key (an
        error event may quote it), the usage event only for a client that asked; usage
        recorded at its end (estimated from the text relayed if the upstream sent none)."""
        import httpx  # noqa: PLC0415

        row = call.row
        usage: Any = None
        relayed = 0
        error = True
        try:
            async for event in _events(response):
                data = redact(event, key)
                if data == "[DONE]":
                    break
                try:
                    obj = json.loads(data)
                except ValueError:
                    continue
                if isinstance(obj, dict) and obj.get("usage"):
                    usage = obj["usage"]
                relayed += text_bytes(obj)
                shown = without_usage(obj) if call.hide_usage else obj
                if shown is not None:
                    yield public_model(shown, row.name)
                if isinstance(obj, dict) and "error" in obj:
                    return
            error = False
        except httpx.TimeoutException:
            raise _failure(row, "stopped sending", 504) from None
        except httpx.HTTPError as exc:
            raise _failure(row, f"broke off the stream ({type(exc).__name__})") from None
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
                body = {"usage": usage} if usage else None
                await self.usage.record_call(
                    call.principal,
                    call.admission,
                    row.name,
                    body=body,
                    error=error,
                    request=call.request,
                    relayed=relayed,
                )


@dataclass(frozen=True)
class _Call:
    """A call under way: who, its admission, the row, the request as sent, and whether
    the client asked for the stream's usage."""

    principal: Principal
    admission: Admission
    row: LlmRecord
    request: Request
    hide_usage: bool


async def _events(response: httpx.Response) -> AsyncIterator[str]:
    """The `data` of each server-sent event (comments and other fields skipped)."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
            continue
        if line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
    if lines:
        yield "\n".join(lines)
