"""Logs the relay writes: JSON lines (python-json-logger), each carrying the id of the
request it belongs to and what that request has bound so far (route, model, key id).

Request fields live in a context variable, so every log line written while a request
runs — by any module — names that request.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

_fields: ContextVar[dict[str, Any] | None] = ContextVar("natrelay_request", default=None)

TEXT_FORMAT = "%(levelname)-9s %(message)s"
# The logger of the one line every request writes when it ends (web.middleware).
REQUEST_LOGGER = "natrelay.request"
# The record attributes every JSON line carries (plus the request's fields).
JSON_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def new_request_id() -> str:
    return uuid.uuid4().hex


@contextmanager
def request_scope(request_id: str) -> Iterator[dict[str, Any]]:
    """Bind log fields to one request for the code that runs inside the block."""
    fields: dict[str, Any] = {"requestId": request_id}
    token = _fields.set(fields)
    try:
        yield fields
    finally:
        _fields.reset(token)


def bind(**fields: Any) -> None:
    """Add fields (route, model, keyId, ...) to the current request's log lines."""
    current = _fields.get()
    if current is not None:
        current.update({k: v for k, v in fields.items() if v is not None})


def request_id() -> str | None:
    current = _fields.get()
    return None if current is None else current.get("requestId")


# Libraries whose DEBUG lines carry a call's parameters and answer (botocore's request
# params, response bodies; the HTTP client's headers).
_CALL_LOGGERS = ("botocore", "boto3", "urllib3")
_secret_calls = threading.local()


@contextmanager
def secret_call() -> Iterator[None]:
    """A call that sends or reads a secret (CreateSecret, GetSecretValue, GetParameter)
    runs inside: this thread's lines of boto and urllib3 below WARNING are dropped
    meanwhile, whatever their level is set to, so no log ever holds its value."""
    before = getattr(_secret_calls, "on", False)
    _secret_calls.on = True
    try:
        yield
    finally:
        _secret_calls.on = before


class SecretCalls(logging.Filter):
    """Drops the lines `secret_call` silences."""

    def filter(self, record: logging.LogRecord) -> bool:
        quiet = getattr(_secret_calls, "on", False) and record.levelno < logging.WARNING
        return not (quiet and record.name.startswith(_CALL_LOGGERS))


class NoQuery(logging.Filter):
    """Uvicorn's access log lines without the query of the path: an older publisher names
    its session there (`?providerSessionId=`), and a session id is its secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].partition("?")[0], *args[3:])
        return True


_NO_QUERY = NoQuery()


class TextFormatter(logging.Formatter):
    """Human-readable lines; a request's own line says what it was (the JSON one carries
    the same as fields): `POST /v1/chat/completions -> 200 in 412.7 ms (model echo, key
    1a18c5119141, request a1b2…)`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if record.name == REQUEST_LOGGER and record.msg == "request" and not record.args:
            record = logging.makeLogRecord(record.__dict__)
            record.msg = _request_line(record.__dict__)
        return super().format(record)


def _request_line(fields: dict[str, Any]) -> str:
    line = f"{fields.get('method', '?')} {fields.get('path', '?')} -> {fields.get('status', '?')}"
    if "durationMs" in fields:
        line += f" in {fields['durationMs']} ms"
    about = [
        f"{label} {fields[name]}"
        for name, label in (
            ("errorCode", "error"),
            ("model", "model"),
            ("servedBy", "served by"),
            ("keyId", "key"),
            ("requestId", "request"),
        )
        if fields.get(name)
    ]
    return f"{line} ({', '.join(about)})" if about else line


class RequestFields(logging.Filter):
    """Copies the current request's fields onto every record (for the JSON formatter)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_fields.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def configure_logging(
    fmt: str = "json", level: str | int = "INFO", stream: TextIO | None = None
) -> None:
    """Configure the root logger once: JSON lines (`json`) or human-readable (`text`), to
    `stream` (default: stderr)."""
    root = logging.getLogger()
    on_lambda = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
    for old in [h for h in root.handlers if on_lambda or getattr(h, "natrelay", False)]:
        # ours from an earlier call, and on Lambda the runtime's own (it would print every
        # line twice); anyone else's (pytest's) stays
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.natrelay = True  # type: ignore[attr-defined]
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(JSON_FORMAT, rename_fields={"levelname": "level", "asctime": "time"})
        )
    else:
        handler.setFormatter(TextFormatter())
    handler.addFilter(RequestFields())
    handler.addFilter(SecretCalls())
    logging.getLogger("uvicorn.access").addFilter(_NO_QUERY)  # once: the same filter
    root.addHandler(handler)
    root.setLevel(level)
    # boto's and httpx's per-call lines would drown the relay's own.
    for noisy in ("botocore", "boto3", "urllib3", "httpx", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
