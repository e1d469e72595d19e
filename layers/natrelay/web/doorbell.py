"""The doorbell's WebSocket, both ways it is served.

* On AWS an API Gateway WebSocket API holds the connections; its `$connect` and
  `$disconnect` events come to `GatewayEvents` (functions/doorbell), which binds and
  unbinds them. Rings go out through the management API (natrelay.store.connections);
  the `ping` route is answered by API Gateway itself (a mock integration).
* In server mode (natrelay dev, self-hosted) the app serves `Paths.DOORBELL` itself and
  rings the connections it holds in memory.

Who may connect: a publisher key (or the simple mode's publish token), naming in the
`X-Natrelay-Session` header a session that key created. Anything else is refused
before the connection opens: 401 for a bad key, 403 for another role, and 403
`session_forbidden` for a session that is not the key's own (or does not exist).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Any

import anyio
from pydantic import TypeAdapter, ValidationError
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from natrelay.errors import ForbiddenError, RelayError, SessionForbiddenError
from natrelay.service import Relay
from natrelay.service.assembly import build_relay
from natrelay.web.errors import error_body, status_of
from natrelay.wire import DOORBELL_SESSION_HEADER, DoorbellMessage, Role, SessionId

log = logging.getLogger("natrelay.doorbell")

_SESSION_ID: TypeAdapter[str] = TypeAdapter(SessionId)
PONG = DoorbellMessage(type="pong").model_dump_json(exclude_none=True)


async def open_doorbell(
    relay: Relay, authorization: str | None, session_id: str | None, connection_id: str
) -> None:
    """Check the caller and bind the connection to its session; RelayError if refused."""
    principal = await relay.access.authenticate(authorization)
    if principal.role is not Role.PUBLISHER:
        raise ForbiddenError(f"this is a {principal.role.value} key; the doorbell needs publisher")
    try:
        session_id = _SESSION_ID.validate_python(session_id)
    except ValidationError:
        raise SessionForbiddenError(
            f"name your session in the {DOORBELL_SESSION_HEADER} header",
            param=DOORBELL_SESSION_HEADER,
        ) from None
    session = await relay.sessions.get(principal, session_id)
    await relay.doorbell.connect(session, connection_id)


# --- AWS: API Gateway WebSocket events ------------------------------------------------


class GatewayEvents:
    """`$connect` / `$disconnect` events of the WebSocket API -> the doorbell. Built once
    per cold start (like Mangum), with an event loop of its own."""

    def __init__(self, relay: Relay | None = None) -> None:
        self.relay = relay or build_relay()
        self._loop = asyncio.new_event_loop()

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._loop.run_until_complete(self.handle(event))
        finally:
            self.relay.metrics.flush()

    async def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        context = event.get("requestContext") or {}
        route, connection_id = context.get("routeKey"), context.get("connectionId")
        if not isinstance(connection_id, str) or not connection_id:
            return {"statusCode": 400}
        if route == "$connect":
            headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
            try:
                await open_doorbell(
                    self.relay,
                    headers.get("authorization"),
                    headers.get(DOORBELL_SESSION_HEADER.lower()),
                    connection_id,
                )
            except RelayError as exc:
                log.info("doorbell refused: %s", exc.code)
                return {"statusCode": status_of(exc), "body": json.dumps(error_body(exc))}
            return {"statusCode": 200}
        if route == "$disconnect":
            await self.relay.doorbell.disconnect(connection_id)
            return {"statusCode": 200}
        return {"statusCode": 400}


# --- server mode: the app serves the WebSocket itself ---------------------------------


async def doorbell_socket(websocket: WebSocket) -> None:
    """`Paths.DOORBELL`: hold the connection, answer pings, close it at the age limit."""
    relay: Relay = websocket.app.state.relay
    connection_id = secrets.token_urlsafe(16)
    try:
        await open_doorbell(
            relay,
            websocket.headers.get("authorization"),
            websocket.headers.get(DOORBELL_SESSION_HEADER),
            connection_id,
        )
    except RelayError as exc:
        log.info("doorbell refused: %s", exc.code)
        await _deny(websocket, exc)
        return
    await websocket.accept()
    lock = asyncio.Lock()

    async def send(data: bytes) -> None:
        async with lock:
            await websocket.send_text(data.decode())

    relay.local_bells.add(connection_id, send)
    try:
        with anyio.move_on_after(relay.settings.doorbell_max_connection_seconds) as limit:
            while True:
                if _is_ping(await websocket.receive_text()):
                    await send(PONG.encode())
        if limit.cancelled_caught:
            await websocket.close(code=1001, reason="connection age limit")
    except WebSocketDisconnect:
        pass
    finally:
        relay.local_bells.discard(connection_id)
        await relay.doorbell.disconnect(connection_id)


def _is_ping(text: str) -> bool:
    try:
        message = json.loads(text)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("action") == "ping"


async def _deny(websocket: WebSocket, exc: RelayError) -> None:
    """Refuse the handshake with the error's HTTP status, as API Gateway does."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(
            JSONResponse(error_body(exc), status_code=status_of(exc))
        )
    else:
        await websocket.close(code=1008)
