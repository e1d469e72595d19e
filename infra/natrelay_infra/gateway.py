"""A local stand-in for API Gateway's WebSocket API and its `@connections` management API.

    python -m natrelay_infra.gateway --port N [--max-connection-seconds S] [--idle-seconds S]

For the Lambda-mode benchmark and tests: the relay's API processes ring publishers
through it exactly as on AWS (boto3 `apigatewaymanagementapi`, PostToConnection to
`NATRELAY_DOORBELL_ENDPOINT`), with no signal between processes. It

* holds the publishers' WebSockets at `ws://127.0.0.1:N/<stage>`; on a handshake it builds
  a `$connect` event and hands it to the doorbell's handler logic
  (`natrelay.web.doorbell.GatewayEvents`, what functions/doorbell runs), accepting the
  connection only on a 200; on a close, a `$disconnect` event;
* answers `{"action": "ping"}` with `{"type": "pong"}` (the template's mock route);
* accepts `POST [/<stage>]/@connections/{id}` as AWS does: 200, or 410 `GoneException`
  for a connection it does not hold;
* closes connections at the maximum age (2 h) or after the idle timeout (10 min), as
  API Gateway does;
* serves `GET /_gateway/stats` and `POST /_gateway/forget` (drop every connection
  without telling anyone, as a lost `$disconnect` would: posts to them answer 410).

The relay it calls is configured by NATRELAY_* as usual. It prints its URL on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from natrelay.web.doorbell import GatewayEvents

PONG = json.dumps({"type": "pong"})


@dataclass
class _Held:
    websocket: WebSocket
    opened: float
    last: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Gateway:
    def __init__(
        self, events: GatewayEvents, max_connection_seconds: float, idle_seconds: float
    ) -> None:
        self.events = events
        self.max_connection_seconds = max_connection_seconds
        self.idle_seconds = idle_seconds
        self.held: dict[str, _Held] = {}
        self.counts: Counter[str] = Counter()
        # More numbers for /_gateway/stats (the benchmark counts DynamoDB requests here).
        self.extra_stats: Callable[[], dict[str, Any]] | None = None

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/_gateway/stats", self.stats),
                Route("/_gateway/forget", self.forget, methods=["POST"]),
                Route("/@connections/{cid}", self.post, methods=["POST"]),
                Route("/{stage}/@connections/{cid}", self.post, methods=["POST"]),
                WebSocketRoute("/{stage}", self.socket),
            ]
        )

    async def stats(self, request: Request) -> Response:
        extra = self.extra_stats() if self.extra_stats is not None else {}
        return JSONResponse({**self.counts, "open": len(self.held), **extra})

    async def forget(self, request: Request) -> Response:
        self.counts["forgotten"] += len(self.held)
        self.held.clear()
        return JSONResponse({"forgotten": True})

    async def post(self, request: Request) -> Response:
        data = await request.body()
        self.counts["posts"] += 1
        held = self.held.get(request.path_params["cid"])
        if held is None:
            self.counts["gone"] += 1
            return JSONResponse(
                {"message": None}, status_code=410, headers={"x-amzn-ErrorType": "GoneException"}
            )
        async with held.lock:
            await held.websocket.send_text(data.decode())
        held.last = time.monotonic()
        self.counts["delivered"] += 1
        return Response(status_code=200)

    def _event(
        self, route: str, cid: str, headers: dict[str, str], closed_with: int | None = None
    ) -> dict[str, Any]:
        kind = "CONNECT" if route == "$connect" else "DISCONNECT"
        closed = {} if closed_with is None else {"disconnectStatusCode": closed_with}
        return {
            "headers": headers,
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "requestContext": {
                "routeKey": route,
                "eventType": kind,
                "connectionId": cid,
                "requestId": uuid.uuid4().hex,
                "apiId": "local",
                "stage": "local",
                "domainName": "127.0.0.1",
                "connectedAt": int(time.time() * 1000),
                **closed,
            },
            "isBase64Encoded": False,
        }

    async def socket(self, websocket: WebSocket) -> None:
        cid = secrets.token_urlsafe(12)
        headers = dict(websocket.headers.items())
        answer = await self.events.handle(self._event("$connect", cid, headers))
        status = int(answer.get("statusCode", 500))
        if status != 200:
            self.counts["refused"] += 1
            await websocket.send_denial_response(
                Response(answer.get("body") or "", status_code=status)
            )
            return
        await websocket.accept()
        now = time.monotonic()
        held = self.held[cid] = _Held(websocket, now, now)
        self.counts["connects"] += 1
        code = 1006  # as API Gateway says of a connection that broke
        try:
            code = await self._hold(cid, held)
        finally:
            if self.held.get(cid) is held:
                del self.held[cid]
            self.counts["disconnects"] += 1
            await self.events.handle(self._event("$disconnect", cid, {}, code))

    async def _hold(self, cid: str, held: _Held) -> int:
        """Hold the connection until it closes; the close's status code."""
        while True:
            now = time.monotonic()
            limit = min(held.opened + self.max_connection_seconds, held.last + self.idle_seconds)
            if now >= limit:
                self.counts["closedByGateway"] += 1
                with contextlib.suppress(Exception):
                    await held.websocket.close(code=1001, reason="Going away")
                return 1001
            try:
                async with asyncio.timeout(limit - now):
                    text = await held.websocket.receive_text()
            except TimeoutError:
                continue
            except WebSocketDisconnect as exc:
                return exc.code
            held.last = time.monotonic()
            with contextlib.suppress(ValueError):
                if json.loads(text).get("action") == "ping":
                    self.counts["pings"] += 1
                    async with held.lock:
                        await held.websocket.send_text(PONG)


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-connection-seconds", type=float, default=7200)
    parser.add_argument("--idle-seconds", type=float, default=600)
    return parser.parse_args()


def serve(gateway: Gateway, port: int) -> None:
    """Serve until SIGTERM; prints the URL once listening."""
    config = uvicorn.Config(
        gateway.app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.02)
        bound = server.servers[0].sockets[0].getsockname()[1]
        print(f"http://127.0.0.1:{bound}", flush=True)
        await task

    asyncio.run(run())


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    gateway = Gateway(GatewayEvents(), args.max_connection_seconds, args.idle_seconds)
    serve(gateway, args.port)


if __name__ == "__main__":
    main()
