"""The status page (`/status`): plain server-rendered HTML that refreshes itself.

Who: admin keys only. A browser logs in with the form at `/status/login` (POST, the key
in the body, never in a URL); the relay checks that the key is an admin's and opens a
page session (service.page_sessions): the cookie holds an opaque session id, never the
key, valid only under /status, HttpOnly, SameSite=Strict, Secure unless configured off
(web.page_cookie). Every page load checks the session and its key, so revoking the key
ends it within the key cache time. `POST /status/logout` (with the page's CSRF token)
ends the session on the server.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from html import escape
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from natrelay.errors import AuthError
from natrelay.observe import bind
from natrelay.service import Relay
from natrelay.service.board import KeyToday, RowState
from natrelay.service.page_sessions import STATUS_PAGES, PageSessions
from natrelay.web.page_cookie import PageCookie
from natrelay.wire import Paths, Role, fingerprint

COOKIE = PageCookie("natrelay_status", Paths.STATUS)
REFRESH_SECONDS = 10
MAX_FORM_BYTES = 4096
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:left}
th{background:#f4f4f4}.active{color:#070}.hibernating{color:#a60}.inactive,.unavailable{color:#b00}
.muted{color:#777}form.inline{display:inline}
"""


def _page(title: str, body: str, *, refresh: bool = False, status: int = 200) -> HTMLResponse:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def _login_form(problem: str = "") -> str:
    note = f'<p class="inactive" id="problem">{escape(problem)}</p>' if problem else ""
    return (
        f"<h1>natrelay status</h1>{note}"
        f'<form method="post" action="{Paths.STATUS_LOGIN}">'
        '<label>Admin key <input type="password" name="key" id="key" autocomplete="off" '
        'required></label> <button type="submit" id="login">Log in</button></form>'
    )


async def _form(request: Request) -> dict[str, str] | None:
    """The posted form's fields (first value each); None past MAX_FORM_BYTES."""
    raw = b""
    async for piece in request.stream():
        raw += piece
        if len(raw) > MAX_FORM_BYTES:
            return None
    return {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}


async def login_page(request: Request) -> Response:
    bind(route=Paths.STATUS_LOGIN)
    return _page("natrelay status: log in", _login_form())


async def login(request: Request) -> Response:
    bind(route=Paths.STATUS_LOGIN)
    relay: Relay = request.app.state.relay
    form = await _form(request)
    if form is None:
        return _page("natrelay status", _login_form("that is not a key"), status=413)
    token = form.get("key", "").strip()
    if not token:
        problem = "log in with an admin key"
        return _page("natrelay status: log in", _login_form(problem), status=401)
    try:
        principal = await relay.access.authenticate(f"Bearer {token}")
    except AuthError as exc:
        return _page("natrelay status: log in", _login_form(exc.message), status=401)
    bind(keyId=principal.key_id)
    if principal.role is not Role.ADMIN:
        problem = f"this is a {principal.role.value} key: the status page is for admin keys"
        return _page("natrelay status: log in", _login_form(problem), status=403)
    session_id = await relay.page_sessions.open(principal, token, STATUS_PAGES)
    response = RedirectResponse(Paths.STATUS, status_code=303, headers=HEADERS)
    COOKIE.set(response, session_id, relay.settings)
    return response


async def logout(request: Request) -> Response:
    """End the session on the server (the form carries its CSRF token)."""
    bind(route=Paths.STATUS_LOGOUT)
    relay: Relay = request.app.state.relay
    session_id = COOKIE.read(request)
    form = await _form(request) or {}
    if session_id and not PageSessions.csrf_ok(session_id, form.get("csrf", "")):
        return _page("natrelay status", "<p>Log out from the status page itself.</p>", status=403)
    await relay.page_sessions.close(session_id)
    response = RedirectResponse(Paths.STATUS_LOGIN, status_code=303, headers=HEADERS)
    COOKIE.clear(response, relay.settings)
    return response


async def status_page(request: Request) -> Response:
    bind(route=Paths.STATUS)
    relay: Relay = request.app.state.relay
    session_id = COOKIE.read(request)
    try:
        principal = await relay.page_sessions.check(session_id, STATUS_PAGES)
    except AuthError:
        return RedirectResponse(Paths.STATUS_LOGIN, status_code=303, headers=HEADERS)
    bind(keyId=principal.key_id)
    csrf = PageSessions.csrf_token(session_id or "")
    now = relay.clock()
    rows, keys = await asyncio.gather(relay.board.rows(), relay.board.keys_today())
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    body = (
        f"<h1>natrelay status</h1><div class=muted>{escape(stamp)} · refreshes every "
        f"{REFRESH_SECONDS} s · "
        f'<form class=inline method="post" action="{Paths.STATUS_LOGOUT}">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        '<button type="submit">Log out</button></form></div>'
        f"<h2>Rows ({len(rows)})</h2>{_rows_table(rows, now)}"
        f"<h2>Keys today</h2>{_keys_table(keys)}"
    )
    return _page("natrelay status", body, refresh=True)


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "—"
    seconds = max(0, int(now - ts))
    if seconds < 120:
        return f"{seconds} s ago"
    return f"{seconds // 60} min ago" if seconds < 7200 else f"{seconds // 3600} h ago"


def _cells(values: list[str]) -> str:
    return "".join(f"<td>{v}</td>" for v in values)


def _queue(r: RowState) -> str:
    """The queue's depth, and each class waiting with its longest wait."""
    waiting = [
        f"{p.value} {c.depth} (up to {c.oldest_seconds or 0:.0f} s)"
        for p, c in r.classes.items()
        if c.depth
    ]
    return str(r.queue_depth) + (f": {escape(', '.join(waiting))}" if waiting else "")


def _rows_table(rows: list[RowState], now: float) -> str:
    head = [
        "name",
        "kind",
        "status",
        "members",
        "queue",
        "waking",
        "fallbacks",
        "last&nbsp;heartbeat",
        "requests&nbsp;(1&nbsp;h)",
        "errors&nbsp;(1&nbsp;h)",
    ]
    lines = []
    for r in rows:
        members = (
            "—"
            if r.row.public
            else ", ".join(f"{fingerprint(m.session_id)} ({m.status.value})" for m in r.members)
            or "none"
        )
        hour = r.last_hour
        lines.append(
            f'<tr id="row-{escape(r.row.name)}">'
            + _cells(
                [
                    f"<b>{escape(r.row.name)}</b>",
                    escape(r.row.kind),
                    f'<span class="{r.status.value}">{r.status.value}</span>',
                    escape(members),
                    "—" if r.row.public else _queue(r),
                    "yes" if r.waking else "no",
                    escape(", ".join(r.row.fallbacks)) or "—",
                    "—" if r.row.public else _ago(r.row.last_heartbeat_at, now),
                    "—" if hour is None else str(hour[0]),
                    "—" if hour is None else str(hour[1]),
                ]
            )
            + "</tr>"
        )
    header = "".join(f"<th>{h}</th>" for h in head)
    return f'<table id="rows"><tr>{header}</tr>{"".join(lines)}</table>'


def _keys_table(keys: list[KeyToday]) -> str:
    head = [
        "key",
        "label",
        "role",
        "requests",
        "prompt&nbsp;tokens",
        "completion&nbsp;tokens",
        "errors",
        "refused",
    ]
    lines = []
    for k in keys:
        u = k.usage
        label = escape(k.label) + (" <span class=inactive>(revoked)</span>" if k.revoked else "")
        numbers = (
            [u.requests, u.prompt_tokens, u.completion_tokens, u.errors, u.refused]
            if u
            else [0] * 5
        )
        lines.append(
            f'<tr id="key-{escape(k.key_id)}">'
            + _cells([escape(k.key_id), label, k.role.value, *(str(n) for n in numbers)])
            + "</tr>"
        )
    header = "".join(f"<th>{h}</th>" for h in head)
    return f'<table id="keys"><tr>{header}</tr>{"".join(lines)}</table>'
