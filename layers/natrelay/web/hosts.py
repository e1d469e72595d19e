"""Which `Host` the relay answers for (`NATRELAY_ALLOWED_HOSTS`): DNS rebinding.

A web page on a name its owner points at 127.0.0.1 reaches a local relay with that name
in `Host`, and may know a local relay's default tokens. With names configured, the relay
answers only requests for those names or for an IP address (a page can never make a
browser send an IP literal of another origin), and refuses the rest with 400 before
anything else reads them. No names configured: every host (behind API Gateway, which
routes by host itself).
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import ip_address

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from natrelay.wire import ErrorCode


def host_name(host: str) -> str:
    """The name of a `Host` header: no port, no IPv6 brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, _, port = host.rpartition(":")
    return name if name and port.isdigit() else host


def _is_address(name: str) -> bool:
    try:
        ip_address(name)
    except ValueError:
        return False
    return True


class HostGuard:
    """Refuses requests whose Host is neither an IP address nor an allowed name."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(host_name(h) for h in allowed)

    def allows(self, host: str) -> bool:
        name = host_name(host)
        return not name or name in self.allowed or _is_address(name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host", "")
        if self.allows(host):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await WebSocketClose(code=1008)(scope, receive, send)
            return
        error = {
            "message": f"this relay does not answer for the host {host_name(host)!r} "
            "(NATRELAY_ALLOWED_HOSTS)",
            "type": "invalid_request_error",
            "code": ErrorCode.INVALID_REQUEST.value,
            "param": "Host",
        }
        await JSONResponse({"error": error}, status_code=400)(scope, receive, send)


def host_guard(allowed: list[str]) -> list[Middleware]:
    """The middleware that keeps to `allowed` hosts (none: every host is answered)."""
    return [Middleware(HostGuard, allowed=allowed)] if allowed else []
