"""The console's shell: its login, its session check, its CSRF check and its layout.

Who: admin keys only. A browser logs in with the form at `/console/login` (POST, the key
in the body, never in a URL); the relay checks that the key is an admin's and opens a
page session (service.page_sessions): the cookie holds an opaque session id, never the
key, valid only under /console, HttpOnly, SameSite=Strict, Secure unless configured off
(web.page_cookie). `guarded_page` checks the session and its key on every request, so
revoking the key ends it within the key cache time, and every POST carries the page's
CSRF token (403 without it). The routes and their roles are in web/__init__.py.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html import escape
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from natrelay.errors import AuthError, RelayError
from natrelay.observe import bind
from natrelay.service import Principal, Relay
from natrelay.service.page_sessions import CONSOLE_PAGES, PageSessions
from natrelay.web.console.style import STYLE
from natrelay.web.errors import status_of
from natrelay.web.page_cookie import PageCookie
from natrelay.wire import Paths, Role

COOKIE = PageCookie("natrelay_console", Paths.CONSOLE)
MAX_FORM_BYTES = 4096
# The rows' YAML may be longer than the other forms.
MAX_YAML_BYTES = 256 * 1024
NAV = (
    (Paths.CONSOLE, "Overview"),
    (Paths.CONSOLE_USAGE, "Usage"),
    (Paths.CONSOLE_LATENCY, "Latency"),
    (Paths.CONSOLE_REQUESTS, "Requests"),
    (Paths.CONSOLE_KEYS, "Keys"),
    (Paths.CONSOLE_ROWS, "Rows"),
)
# The one script of the console (the secret's copy button), allowed by its hash.
COPY_SCRIPT = (
    "document.querySelectorAll('button[data-copy]').forEach(function(b){"
    "b.addEventListener('click',function(){"
    "var f=document.getElementById(b.getAttribute('data-copy'));f.select();"
    "(navigator.clipboard?navigator.clipboard.writeText(f.value):Promise.reject())"
    ".then(function(){b.textContent='Copied';},function(){document.execCommand('copy');"
    "b.textContent='Copied';});});});"
)
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(COPY_SCRIPT.encode()).digest()).decode()


def headers(*, script: bool = False) -> dict[str, str]:
    scripts = f" script-src 'sha256-{_SCRIPT_HASH}';" if script else ""
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": f"default-src 'none'; style-src 'unsafe-inline'; img-src "
        f"'self' data:;{scripts} form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }


@dataclass(frozen=True)
class Visit:
    """Who is looking at a page (an admin's live session), its CSRF token, and what a
    POST sent (its fields, first value each)."""

    principal: Principal
    csrf: str
    path: str
    form: dict[str, str] = field(default_factory=dict)


PageEndpoint = Callable[[Request, Relay, Visit], Awaitable[Response]]


def page(
    visit: Visit | None,
    title: str,
    body: str,
    *,
    refresh: int | None = None,
    status: int = 200,
    script: bool = False,
) -> HTMLResponse:
    """A console page: the navigation (with log out) when someone is logged in."""
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    top = ""
    if visit is not None:
        links = "".join(
            f'<li><a href="{path}"'
            + (' aria-current="page"' if path == visit.path else "")
            + f">{label}</a></li>"
            for path, label in NAV
        )
        top = (
            f'<header><a class="brand" href="{Paths.CONSOLE}">natrelay</a>'
            f'<nav aria-label="Console"><ul>{links}</ul></nav>'
            f'<form class="logout" method="post" action="{Paths.CONSOLE_LOGOUT}">'
            f'{csrf_field(visit)}<button type="submit">Log out</button></form></header>'
        )
    tail = f"<script>{COPY_SCRIPT}</script>" if script else ""
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{escape(title)} · natrelay</title><style>{STYLE}</style></head>"
        f'<body><a class="skip" href="#main">Skip to the content</a>{top}'
        f'<main id="main"><h1>{escape(title)}</h1>{body}</main>{tail}</body></html>'
    )
    return HTMLResponse(html, status_code=status, headers=headers(script=script))


def csrf_field(visit: Visit) -> str:
    return f'<input type="hidden" name="csrf" value="{escape(visit.csrf)}">'


def note(text: str, kind: str = "ok") -> str:
    """A message at the top of a page (role=status, or alert for a refusal)."""
    role = "alert" if kind == "problem" else "status"
    return f'<p class="note {kind}" role="{role}" id="note">{escape(text)}</p>'


async def read_form(request: Request, limit: int = MAX_FORM_BYTES) -> dict[str, str] | None:
    """The posted form's fields (first value each); None past `limit` bytes."""
    raw = b""
    async for piece in request.stream():
        raw += piece
        if len(raw) > limit:
            return None
    return {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}


def _to_login() -> Response:
    return RedirectResponse(Paths.CONSOLE_LOGIN, status_code=303, headers=headers())


def guarded_page(
    path: str, roles: frozenset[Role], endpoint: PageEndpoint, *, form_limit: int = MAX_FORM_BYTES
) -> Callable[[Request], Awaitable[Response]]:
    """A console route: a live session of an admin (`roles`) or nothing; a POST also
    needs the session's CSRF token, or it is refused (403) before anything changes."""

    async def route(request: Request) -> Response:
        relay: Relay = request.app.state.relay
        bind(route=path)
        session_id = COOKIE.read(request)
        try:
            principal = await relay.page_sessions.check(session_id, CONSOLE_PAGES)
        except AuthError:
            if request.method == "GET":
                return _to_login()
            body = f'<p>Your session has ended. <a href="{Paths.CONSOLE_LOGIN}">Log in</a>.</p>'
            return page(None, "Log in again", body, status=403)
        bind(keyId=principal.key_id)
        if principal.role not in roles:
            return page(
                None, "Not for this key", "<p>This page is not for this key.</p>", status=403
            )
        visit = Visit(principal, PageSessions.csrf_token(session_id or ""), path)
        if request.method == "POST":
            form = await read_form(request, form_limit)
            if form is None:
                return page(visit, "Too large", "<p>That form is too large.</p>", status=413)
            if not PageSessions.csrf_ok(session_id, form.get("csrf", "")):
                body = "<p>This form is not from your console page: nothing was changed.</p>"
                return page(visit, "Refused", body, status=403)
            visit = Visit(principal, visit.csrf, path, form)
        try:
            return await endpoint(request, relay, visit)
        except RelayError as exc:  # the one place a page's refusal becomes HTML
            home = max((p for p, _ in NAV if path.startswith(p)), key=len)
            back = f'<p><a href="{home}" id="back">Back</a></p>'
            return page(
                visit, "Not done", note(exc.message, "problem") + back, status=status_of(exc)
            )

    route.__name__ = endpoint.__name__
    return route


def _login_form(problem: str = "") -> str:
    return (
        (note(problem, "problem") if problem else "")
        + f'<form method="post" action="{Paths.CONSOLE_LOGIN}" class="login">'
        '<label for="key">Admin key</label> <input type="password" name="key" id="key" '
        'autocomplete="off" required> <button type="submit" id="login">Log in</button></form>'
    )


async def login_page(request: Request) -> Response:
    bind(route=Paths.CONSOLE_LOGIN)
    return page(None, "Log in to the console", _login_form())


async def login(request: Request) -> Response:
    bind(route=Paths.CONSOLE_LOGIN)
    relay: Relay = request.app.state.relay
    title = "Log in to the console"
    form = await read_form(request)
    if form is None:
        return page(None, title, _login_form("that is not a key"), status=413)
    token = form.get("key", "").strip()
    if not token:
        return page(None, title, _login_form("log in with an admin key"), status=401)
    try:
        principal = await relay.access.authenticate(f"Bearer {token}")
    except AuthError as exc:
        return page(None, title, _login_form(exc.message), status=401)
    bind(keyId=principal.key_id)
    if principal.role is not Role.ADMIN:
        problem = f"this is a {principal.role.value} key: the console is for admin keys"
        return page(None, title, _login_form(problem), status=403)
    session_id = await relay.page_sessions.open(principal, token, CONSOLE_PAGES)
    response = RedirectResponse(Paths.CONSOLE, status_code=303, headers=headers())
    COOKIE.set(response, session_id, relay.settings)
    return response


async def logout(request: Request, relay: Relay, visit: Visit) -> Response:
    """End the session on the server (the form carried its CSRF token)."""
    await relay.page_sessions.close(COOKIE.read(request))
    response = _to_login()
    COOKIE.clear(response, relay.settings)
    return response


async def to_console(request: Request) -> Response:
    """The status page grew into the console's overview."""
    bind(route=Paths.STATUS)
    return RedirectResponse(Paths.CONSOLE, status_code=301, headers=headers())
