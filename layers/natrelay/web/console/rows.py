"""The console's rows (`/console/rows`): apply rows from YAML (as `natrelay llm apply -f`
does: every document checked, then all written or none) and delete a row, releasing its
name (or release an alias). The forms carry the page's CSRF token (web.console.pages checks it)."""

from __future__ import annotations

from html import escape

from starlette.requests import Request
from starlette.responses import Response

from natrelay.errors import InvalidRequestError
from natrelay.service import Relay
from natrelay.store import LlmRecord
from natrelay.web.console.html import Column, status, table
from natrelay.web.console.pages import Visit, csrf_field, note, page
from natrelay.web.requests import parse
from natrelay.wire import LlmApply, Paths
from natrelay.wire.documents import DocumentError, placed, read_documents

EXAMPLE = """name: gpt-mini
kind: public
baseUrl: https://api.openai.com/v1
model: gpt-4o-mini
apiKey: {secretsManager: natrelay/openai}
---
name: llama3
fallbacks: [gpt-mini]
"""


def _delete(visit: Visit) -> Column[LlmRecord]:
    def cell(row: LlmRecord) -> str:
        name = escape(row.name)
        return (
            f'<form method="post" class="inline" action="{Paths.CONSOLE_ROW_DELETE}" '
            f'id="delete-{name}">{csrf_field(visit)}<input type="hidden" name="name" '
            f'value="{name}"><label><input type="checkbox" name="sure" required> delete '
            f'{name}</label><button type="submit" class="danger">Delete</button></form>'
        )

    return Column("", cell)


async def _page(
    relay: Relay, visit: Visit, top: str = "", text: str = "", *, code: int = 200
) -> Response:
    rows = sorted(await relay.stores.llms.all(), key=lambda r: r.name)
    now = relay.clock()
    columns: list[Column[LlmRecord]] = [
        Column("name", lambda r: f"<b>{escape(r.name)}</b>"),
        Column("kind", lambda r: escape(r.kind)),
        Column("status", lambda r: status(relay.catalog.status(r).value)),
        Column("model", lambda r: escape(r.model)),
        Column("fallbacks", lambda r: escape(", ".join(r.fallbacks)) or "—"),
        Column("members", lambda r: str(len(r.live_members(now, relay.ctx.liveness.timeout)))),
        _delete(visit),
    ]
    form = (
        f'<h2 id="h-apply">Apply rows</h2><form method="post" action="{Paths.CONSOLE_ROWS}" '
        f'id="apply">{csrf_field(visit)}<label for="yaml">YAML documents (as <code>natrelay '
        "llm apply -f</code> takes them; a public row's API key stays in the secret store)"
        f'</label><textarea name="yaml" id="yaml" spellcheck="false" '
        f'placeholder="{escape(EXAMPLE)}">{escape(text)}</textarea>'
        '<p><button type="submit" id="apply-rows">Apply</button></p></form>'
    )
    listing = f'<h2 id="h-rows">Rows ({len(rows)})</h2>' + table(
        "row-list", columns, rows, lambda r: f"row-{r.name}", "No rows yet."
    )
    note_ = (
        '<p class="muted">Deleting a row releases its name (and its aliases): another key '
        "may publish it. A publisher still running registers it again.</p>"
    )
    release = (
        f'<h2 id="h-release">Release a name</h2><form method="post" class="grid" '
        f'action="{Paths.CONSOLE_ROW_DELETE}" id="release">{csrf_field(visit)}'
        '<label for="release-name">A row\'s name or an alias (held by the publisher key that '
        'first published it)</label><input name="name" id="release-name" required '
        'maxlength="200" autocomplete="off"><button type="submit" class="danger" '
        'id="release-it">Release</button></form>'
    )
    return page(visit, "Rows", top + form + listing + note_ + release, status=code)


async def rows(request: Request, relay: Relay, visit: Visit) -> Response:
    return await _page(relay, visit)


async def apply(request: Request, relay: Relay, visit: Visit) -> Response:
    text = visit.form.get("yaml", "")
    try:
        docs, places = read_documents(text, "the form")
    except DocumentError as exc:
        return await _page(relay, visit, note(str(exc), "problem"), text, code=400)
    try:
        applied = await relay.rows.apply(list(parse(LlmApply, {"documents": docs}).documents))
    except InvalidRequestError as exc:
        told = placed(exc.param, exc.message, places) or exc.message
        return await _page(relay, visit, note(told, "problem"), text, code=400)
    done = "; ".join(
        f"{a.name}: {a.action}" + (f" ({', '.join(a.changed)})" if a.action == "updated" else "")
        for a in applied
    )
    return await _page(relay, visit, note(f"Applied. {done}"))


async def delete(request: Request, relay: Relay, visit: Visit) -> Response:
    name = visit.form.get("name", "").strip()
    await relay.catalog.delete(name)  # a row's name, or an alias alone
    return await _page(relay, visit, note(f"{name} deleted or released; the name is free."))
