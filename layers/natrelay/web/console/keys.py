"""The console's keys (`/console/keys`): every key with its limits; create one (its
secret shown this once, with a copy button), change a key's limits, revoke it. Every
form carries the page's CSRF token (web.console.pages checks it)."""

from __future__ import annotations

from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from natrelay.service import Relay
from natrelay.store import KeyRecord
from natrelay.web import views
from natrelay.web.console.html import Column, number, stamp, status, table
from natrelay.web.console.pages import Visit, csrf_field, note, page
from natrelay.web.requests import parse
from natrelay.wire import KeyLimits, KeySpec, Paths, Priority, Role

LIMITS = (
    ("rpm", "requests a minute"),
    ("concurrency", "at once"),
    ("tokens_per_day", "tokens a day"),
)


def _limit_inputs(key: KeyRecord | None, suffix: str = "") -> str:
    out = []
    for name, label in LIMITS:
        value = getattr(key, name) if key is not None else None
        out.append(
            f'<label>{label}<input type="number" min="1" name="{name}" id="{name}{suffix}" '
            f'value="{"" if value is None else value}" placeholder="no limit" inputmode="numeric">'
            "</label>"
        )
    return "".join(out)


def _actions(visit: Visit, now: float) -> Column[KeyRecord]:
    def cell(k: KeyRecord) -> str:
        if k.revoked_at is not None:
            return ""
        kid = escape(k.id)
        return (
            f'<details><summary>Change</summary><form method="post" class="grid" '
            f'action="{Paths.CONSOLE_KEY_LIMITS}" id="limits-{kid}">{csrf_field(visit)}'
            f'<input type="hidden" name="key_id" value="{kid}">{_limit_inputs(k, "-" + kid)}'
            '<button type="submit">Save limits</button></form>'
            f'<form method="post" class="inline" action="{Paths.CONSOLE_KEY_REVOKE}" '
            f'id="revoke-{kid}">{csrf_field(visit)}<input type="hidden" name="key_id" '
            f'value="{kid}"><label><input type="checkbox" name="sure" required> '
            f'revoke {kid}</label><button type="submit" class="danger">Revoke</button>'
            "</form></details>"
        )

    return Column("", cell)


def _key_view(k: KeyRecord, now: float) -> str:
    return status(views.key_view(k, now).status)


def _table(relay: Relay, visit: Visit, keys: list[KeyRecord]) -> str:
    now = relay.clock()
    columns: list[Column[KeyRecord]] = [
        Column("key", lambda k: f"<code>{escape(k.id)}</code>"),
        Column("label", lambda k: escape(k.label)),
        Column("role", lambda k: k.role.value),
        Column("models", lambda k: escape(", ".join(k.models)) if k.models else "all"),
        Column("rpm", lambda k: number(k.rpm) if k.rpm else "—", True),
        Column("at once", lambda k: number(k.concurrency) if k.concurrency else "—", True),
        Column(
            "tokens a day", lambda k: number(k.tokens_per_day) if k.tokens_per_day else "—", True
        ),
        Column("class", lambda k: k.priority.value),
        Column("created (UTC)", lambda k: stamp(k.created_at, "%Y-%m-%d %H:%M")),
        Column("status", lambda k: _key_view(k, now)),
        _actions(visit, now),
    ]
    return table("keys", columns, keys, lambda k: f"key-{k.id}", "No stored keys yet.")


def _create_form(visit: Visit) -> str:
    roles = "".join(f'<option value="{r.value}">{r.value}</option>' for r in Role)
    classes = "".join(f'<option value="{p.value}">{p.value}</option>' for p in Priority)
    return (
        f'<h2 id="h-create">Create a key</h2><form method="post" action="{Paths.CONSOLE_KEYS}" '
        f'class="grid" id="create">{csrf_field(visit)}'
        f'<label>Role<select name="role" id="role">{roles}</select></label>'
        '<label>Label<input name="label" id="label" required maxlength="200"></label>'
        '<label>Models (patterns, comma-separated)<input name="models" id="models" '
        'placeholder="all"></label>'
        + _limit_inputs(None)
        + f'<label>Class (its requests queue as)<select name="priority" id="priority">{classes}'
        "</select></label>"
        '<label>Expires in days<input type="number" min="1" name="expires_in_days" '
        'id="expires_in_days" placeholder="never"></label>'
        '<button type="submit" id="create-key">Create key</button></form>'
    )


async def _page(
    relay: Relay, visit: Visit, top: str = "", *, code: int = 200, script: bool = False
) -> Response:
    keys = await relay.keys.all()
    body = top + _create_form(visit) + f'<h2 id="h-keys">Keys ({len(keys)})</h2>'
    return page(visit, "Keys", body + _table(relay, visit, keys), status=code, script=script)


def _limits(form: dict[str, str]) -> dict[str, Any]:
    return {name: form.get(name, "").strip() or None for name, _ in LIMITS}


async def keys(request: Request, relay: Relay, visit: Visit) -> Response:
    return await _page(relay, visit)


async def create(request: Request, relay: Relay, visit: Visit) -> Response:
    form = visit.form
    models = [m.strip() for m in form.get("models", "").split(",") if m.strip()]
    days = form.get("expires_in_days", "").strip()
    spec = parse(
        KeySpec,
        {
            "role": form.get("role", ""),
            "label": form.get("label", "").strip(),
            "models": models or None,
            **_limits(form),
            "priority": form.get("priority") or Priority.INTERACTIVE.value,
            "expires_in_seconds": int(days) * 86400 if days.isdigit() else (days or None),
        },
    )
    key, secret = await relay.keys.create(spec)
    shown = (
        note(f"Key {key.id} ({key.label}) created. Copy its secret now: it is shown this once.")
        + '<p><label for="secret">Secret</label> <input id="secret" class="secret" readonly '
        f'value="{escape(secret)}"> <button type="button" data-copy="secret" id="copy">Copy'
        "</button></p>"
    )
    return await _page(relay, visit, shown, code=201, script=True)


async def limits(request: Request, relay: Relay, visit: Visit) -> Response:
    key_id = visit.form.get("key_id", "")
    key = await relay.keys.set_limits(key_id, parse(KeyLimits, _limits(visit.form)))
    return await _page(relay, visit, note(f"Limits of key {key.id} saved."))


async def revoke(request: Request, relay: Relay, visit: Visit) -> Response:
    key = await relay.keys.revoke(visit.form.get("key_id", ""))
    return await _page(relay, visit, note(f"Key {key.id} ({key.label}) revoked."))
