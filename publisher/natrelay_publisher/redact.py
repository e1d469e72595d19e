"""Text that leaves this machine: no URL userinfo, query or fragment, no command output.

Error text reaches API clients through the relay. A wake URL may carry a key in its
query (`?apikey=…`) or its userinfo, an httpx error repeats the URL it failed on, and a
backend's own message may quote an upstream URL: every URL in such text keeps only its
scheme, host, port and path.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


def public_url(url: str) -> str:
    """`url` without userinfo, query and fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a URL>"
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


def origin(url: str) -> str:
    """`scheme://host[:port]` of `url`: for logs, where even a path may hold a key."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a URL>"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def redact(text: str) -> str:
    """`text` with every URL in it made public (see `public_url`)."""
    return _URL.sub(lambda match: public_url(match.group(0)), text)


def describe(exc: BaseException) -> str:
    """`ConnectError: All connection attempts failed`, URLs made public."""
    detail = str(exc)
    return redact(f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__)
