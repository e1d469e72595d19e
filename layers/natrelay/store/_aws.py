"""Every AWS client of the relay comes from one boto3 session per process.

A session reads botocore's data (the endpoint rules, each service's model) once and
keeps it: clients made from separate sessions each read it again, which on Lambda is
INIT time every cold start pays. Sessions are not thread-safe, so clients are made
under a lock (the clients themselves are)."""

from __future__ import annotations

import threading
from typing import Any

import boto3

_lock = threading.Lock()
_session: boto3.session.Session | None = None


def aws_client(service: str, **kwargs: Any) -> Any:
    """A new client of `service` (keyword arguments as for `Session.client`)."""
    global _session  # noqa: PLW0603 - one session per process, made on first use
    with _lock:
        if _session is None:
            _session = boto3.session.Session()
        return _session.client(service, **kwargs)  # type: ignore[call-overload]
