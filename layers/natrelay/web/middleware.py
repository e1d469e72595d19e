"""Every request gets an id (`x-request-id`, in its error bodies and log lines), one log
line when it ends (at DEBUG for a publisher's polls, heartbeats and task posts that
succeed: the plumbing of every inference), and its place in the metrics. An unexpected
exception becomes one JSON log line with the traceback and a 500 that names the
request, never the trace."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from natrelay.metrics import Metrics
from natrelay.observe import REQUEST_LOGGER, new_request_id, request_scope
from natrelay.wire import ErrorCode, Paths, trace
from natrelay.wire.trace import Tracing

log = logging.getLogger(REQUEST_LOGGER)

REQUEST_ID_HEADER = "x-request-id"
# A publisher's routes that run for every inference (or every poll of an idle one).
PLUMBING = (Paths.POLL, Paths.CLAIM, Paths.HEARTBEAT, Paths.PROVIDER_TASK.split("{")[0])


def log_level(path: str, status: int) -> int:
    """The level of a request's line: INFO, or DEBUG for the plumbing that succeeded."""
    return logging.DEBUG if status < 400 and path.startswith(PLUMBING) else logging.INFO


def aws_request_id(scope: Scope) -> str | None:
    """API Gateway's request id (or else Lambda's) when Mangum serves the request."""
    event = scope.get("aws.event")
    if isinstance(event, dict):
        context = event.get("requestContext")
        if isinstance(context, dict) and context.get("requestId"):
            return str(context["requestId"])
    lambda_context = scope.get("aws.context")
    request_id = getattr(lambda_context, "aws_request_id", None)
    return str(request_id) if request_id else None


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics, tracing: Tracing | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing or Tracing("natrelay-relay")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = aws_request_id(scope) or new_request_id()
        started = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "sent": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["sent"] = True
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        incoming = Headers(scope=scope).get(trace.HEADER)
        method, path = scope["method"], scope["path"]
        with request_scope(request_id) as fields, self.tracing.span(method, incoming) as span:
            # the request's own span: in every log line, carried by its task
            fields.update(method=method, path=path, traceparent=span.traceparent)
            try:
                with trace.within(span.traceparent):
                    await self.app(scope, receive, send_with_id)
            except Exception:
                log.exception("unhandled error")
                fields["errorCode"] = ErrorCode.INTERNAL_ERROR.value
                if not state["sent"]:
                    await _internal_error(request_id)(scope, receive, send_with_id)
            finally:
                seconds = time.perf_counter() - started
                fields.update(status=state["status"], durationMs=round(seconds * 1000, 1))
                route = fields.get("route", path)
                span.name = f"{method} {route}"
                span.attributes.update(
                    {
                        "http.request.method": method,
                        "http.route": route,
                        "http.response.status_code": state["status"],
                        "natrelay.request_id": request_id,
                    }
                )
                log.log(log_level(scope["path"], state["status"]), "request")
                self.metrics.request(fields.get("route", "-"), state["status"], seconds)
                if "errorCode" in fields:
                    self.metrics.error(str(fields["errorCode"]))
                self.metrics.flush()


def _internal_error(request_id: str) -> JSONResponse:
    code = ErrorCode.INTERNAL_ERROR
    return JSONResponse(
        {
            "error": {
                "message": f"internal error in the relay (request {request_id})",
                "type": code.type,
                "code": code,
                "param": None,
                "request_id": request_id,
            }
        },
        status_code=code.status,
    )
