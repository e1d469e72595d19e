"""Domain errors as HTTP responses (OpenAI-style bodies): the status and type are their
code's (`ErrorCode`, in the wire); the headers each error adds are set here."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from natrelay import errors
from natrelay.observe import bind, request_id
from natrelay.web.notfound import not_allowed, not_found
from natrelay.wire import ErrorCode, Paths

log = logging.getLogger("natrelay.web")


def _body(message: str, code: ErrorCode, param: str | None) -> dict[str, dict[str, object]]:
    """An OpenAI-style error body, of its code's type; it names the request (as
    `x-request-id` does)."""
    bind(errorCode=str(code))
    error: dict[str, object] = {"message": message, "type": code.type, "code": code, "param": param}
    rid = request_id()
    if rid is not None:
        error["request_id"] = rid
    return {"error": error}


def error_body(exc: errors.RelayError) -> dict[str, dict[str, object]]:
    return _body(exc.message, exc.code, exc.param)


# The Anthropic Messages API's error types, by status (its SDK raises by status; the
# type tells people what happened).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
}


def anthropic_body(body: dict[str, dict[str, object]], status: int) -> dict[str, object]:
    """An OpenAI-style error body as the Anthropic Messages API shapes its errors:
    `{"type": "error", "error": {"type", "message", ...}}`; natrelay's `code` and
    `param` stay in `error`, the request id moves up beside it."""
    error = dict(body["error"])
    rid = error.pop("request_id", None)
    error["type"] = _ANTHROPIC_TYPES.get(status, "api_error")
    shaped: dict[str, object] = {"type": "error", "error": error}
    if rid is not None:
        shaped["request_id"] = rid
    return shaped


def anthropic_style(request: Request) -> bool:
    """Whether the request is to the Anthropic Messages API (its errors are shaped so)."""
    path = request.url.path.removeprefix(request.scope.get("root_path", ""))
    return path == Paths.MESSAGES


def status_of(exc: errors.RelayError) -> int:
    """Its code's status; a backend's error keeps the status it was given."""
    return exc.status if isinstance(exc, errors.BackendError) else exc.code.status


def retry_helps(exc: errors.RelayError) -> bool:
    """Whether a client retrying on its own may get another answer (the openai SDK
    retries 408, 409, 429 and 5xx unless told `x-should-retry: false`). It may not when
    the task still runs (a retry runs it again), the publisher is offline (no wake under
    way), the key's budget is spent until midnight, or a public row's upstream may still
    run the request or would fail the same way (its timeout, a refused API key)."""
    if isinstance(exc, errors.TaskTimeoutError | errors.BudgetExceededError):
        return False
    if isinstance(exc, errors.PublisherOfflineError | errors.UpstreamError):
        return exc.retryable
    return True


def error_response(exc: errors.RelayError, *, anthropic: bool = False) -> JSONResponse:
    headers: dict[str, str] = {}
    if not retry_helps(exc):
        headers["x-should-retry"] = "false"
    if isinstance(exc, errors.PublisherOfflineError | errors.RateLimitError):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, errors.TaskTimeoutError):
        headers["Location"] = f"/api/v1/tasks/{exc.task_id}"
    if isinstance(exc, errors.AuthError):
        headers["WWW-Authenticate"] = "Bearer"
    status = status_of(exc)
    body = error_body(exc)
    return JSONResponse(
        anthropic_body(body, status) if anthropic else body, status_code=status, headers=headers
    )


async def relay_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.RelayError)
    return error_response(exc, anthropic=anthropic_style(request))


def _routing_message(request: Request, exc: HTTPException) -> str:
    """A 404's or 405's message: the path the client probably meant (web.notfound)."""
    path = request.url.path
    if exc.status_code == 405:
        return not_allowed(request.method, path, (exc.headers or {}).get("Allow", ""))
    if exc.status_code != 404 or exc.detail != "Not Found":
        return exc.detail  # one of ours (e.g. metrics are off)
    templates = [t for t in (getattr(r, "path", None) for r in request.app.routes) if t]
    base = str(request.base_url).rstrip("/")
    return not_found(request.method, path, base, templates)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(
        exc.status_code, ErrorCode.HTTP_ERROR
    )
    body = _body(_routing_message(request, exc), code, None)
    shaped = anthropic_body(body, exc.status_code) if anthropic_style(request) else body
    return JSONResponse(shaped, status_code=exc.status_code, headers=exc.headers)


async def unexpected(request: Request, exc: Exception) -> Response:
    """Outside a RequestContext only (which catches these first)."""
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    code = ErrorCode.INTERNAL_ERROR
    return JSONResponse(_body("internal error in the relay", code, None), status_code=code.status)


async def client_gone(request: Request, exc: Exception) -> Response:
    """The client hung up while we read its body: nobody to answer, nothing to log."""
    return Response(status_code=499)


HANDLERS = {
    errors.RelayError: relay_error,
    HTTPException: http_error,
    ClientDisconnect: client_gone,
    Exception: unexpected,
}
