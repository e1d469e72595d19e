"""What to say of a URL the relay does not serve: the usual mistakes (an OpenAI base URL
without `/v1`, or with it twice; the clients' base URL where the relay's own URL goes;
`/`; a typo) are answered with the path that was meant, in OpenAI's words ("Invalid
URL (POST /chat/completions)") and ours."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from functools import cache

V1 = "/v1"
MAX_SHOWN = 200


@cache
def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    regex = "".join(
        (".+" if part.endswith(":path}") else "[^/]+") if part.startswith("{") else re.escape(part)
        for part in parts
    )
    return re.compile(f"^{regex}$")


def _served(path: str, templates: Iterable[str]) -> bool:
    return any(_pattern(t).match(path) for t in templates)


def _clip(path: str) -> str:
    return path if len(path) <= MAX_SHOWN else path[:MAX_SHOWN] + "…"


def not_found(method: str, path: str, base: str, templates: list[str]) -> str:
    """The message of a 404 for `method path` (`base`: the relay's URL as the client
    reached it; `templates`: the paths it serves)."""
    invalid = f"Invalid URL ({method} {_clip(path)})"
    if path in ("", "/"):
        return (
            f"{invalid}: this is a natrelay relay. OpenAI clients take {base}{V1} as their "
            f"base URL (GET {V1}/models lists the models); the anthropic SDK takes {base}. "
            "Every path: GET /openapi.json; the console: /console"
        )
    twice = path.replace(f"{V1}{V1}/", f"{V1}/", 1)
    if twice != path and _served(twice, templates):
        return (
            f"{invalid}: /v1 is in it twice; did you mean {twice}? OpenAI clients take "
            f"{base}{V1} as their base URL and add the rest; the anthropic SDK takes {base}, "
            "without /v1"
        )
    if _served(V1 + path, templates):
        return (
            f"{invalid}: did you mean {V1}{path}? OpenAI clients take {base}{V1} as their "
            "base URL, with the /v1"
        )
    own = path.removeprefix(V1)
    if path.startswith(f"{V1}/api/") and _served(own, templates):
        return (
            f"{invalid}: did you mean {own}? The relay's own API is under its URL, {base}, "
            "without /v1 (NATRELAY_URL and a publisher's relay.url are that URL; /v1 is "
            "for OpenAI clients)"
        )
    plain = [t for t in templates if "{" not in t]
    close = difflib.get_close_matches(path, plain, n=1, cutoff=0.8)
    if close:
        return f"{invalid}: did you mean {close[0]}?"
    return (
        f"{invalid}: this relay serves the OpenAI API under {V1} (e.g. POST "
        f"{V1}/chat/completions) and its own under /api/v1; GET /openapi.json lists every path"
    )


def not_allowed(method: str, path: str, allowed: str) -> str:
    """The message of a 405: which methods the path takes."""
    return f"{method} is not allowed on {_clip(path)}: use {allowed or 'another method'}"
