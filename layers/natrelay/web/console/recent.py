"""The console's requests (`/console/requests`): the recent requests of a key or a model,
each opening to its timeline (`/console/requests/{id}`), from its task's own record.
Prompts and answers are not shown unless the operator turns that on
(NATRELAY_CONSOLE_SHOW_TEXT)."""

from __future__ import annotations

import asyncio
from html import escape
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from natrelay.service import Relay
from natrelay.service.access import STATIC_IDS
from natrelay.service.recent import PAGE, Traced
from natrelay.service.timeline import LEGS
from natrelay.store import TaskRecord
from natrelay.web.console.charts import duration
from natrelay.web.console.html import Column, stamp, status, table
from natrelay.web.console.latency import LEG_COLOURS, LEG_HELP
from natrelay.web.console.pages import Visit, page
from natrelay.wire import Paths, fingerprint

# What the page shows of a request's text, at most (when the operator turned it on).
SHOWN_BYTES = 4096


def _took(task: TaskRecord) -> str:
    if not task.state.done or task.updated_at is None:
        return "—"
    return duration((task.updated_at - (task.received_at or task.created_at)) * 1000)


def _link(task: TaskRecord) -> str:
    href = Paths.CONSOLE_REQUEST.format(task_id=task.id)
    return f'<a href="{href}">{escape(stamp(task.created_at))}</a>'


COLUMNS: list[Column[TaskRecord]] = [
    Column("received (UTC)", _link),
    Column("model", lambda t: escape(t.llm)),
    Column("key", lambda t: f"<code>{escape(t.client_key or '—')}</code>"),
    Column("kind", lambda t: t.kind.value + (" (stream)" if t.stream else "")),
    Column("state", lambda t: status(t.state.value)),
    Column("status", lambda t: str(t.status or "—"), True),
    Column("took", _took, True),
]


def _choices(name: str, label: str, options: list[tuple[str, str]], chosen: str) -> str:
    opts = "".join(
        f'<option value="{escape(v)}"{" selected" if v == chosen else ""}>{escape(text)}</option>'
        for v, text in [("", "—"), *options]
    )
    return f'<label>{label}<select name="{name}" id="pick-{name}">{opts}</select></label>'


async def requests(request: Request, relay: Relay, visit: Visit) -> Response:
    key_id = request.query_params.get("key", "")
    model = request.query_params.get("model", "")
    raw_before = request.query_params.get("before", "")
    before = float(raw_before) if raw_before.replace(".", "", 1).isdigit() else None
    keys, rows = await asyncio.gather(relay.keys.all(), relay.stores.llms.all())
    key_options = [(k.id, f"{k.label} ({k.id})") for k in keys] + [
        (i, f"shared {role.value} token") for role, i in STATIC_IDS.items()
    ]
    names = sorted(r.name for r in rows)
    if not key_id and not model and names:
        model = names[0]
    form = (
        f'<form method="get" action="{Paths.CONSOLE_REQUESTS}" class="grid">'
        + _choices("key", "Key", key_options, key_id)
        + _choices("model", "or model", [(n, n) for n in names], model)
        + '<button type="submit" id="show">Show</button></form>'
    )
    if not key_id and not model:
        return page(visit, "Requests", form + '<p class="muted">No rows yet.</p>')
    tasks = await relay.recent.of(
        key_id=key_id or None, llm=None if key_id else model, before=before
    )
    what = f"key {key_id}" if key_id else f"model {model}"
    body = form + f'<h2 id="h-list">Recent requests of {escape(what)}</h2>'
    body += table("requests", COLUMNS, tasks, lambda t: f"task-{t.id}", "No requests kept.")
    if len(tasks) == PAGE:
        query = {"key": key_id} if key_id else {"model": model}
        older = urlencode({**query, "before": repr(tasks[-1].created_at)})
        body += f'<p><a href="{Paths.CONSOLE_REQUESTS}?{older}" id="older">Older</a></p>'
    body += (
        f'<p class="muted">Requests are kept {relay.settings.result_retention_seconds:.0f} s '
        "after they end (NATRELAY_RESULT_RETENTION_SECONDS).</p>"
    )
    return page(visit, "Requests", body)


# The leg that ends at each moment (its bar's colour).
_ENDS = {
    "queued": "relay",
    "woke": "wake",
    "asked": "queue",
    "dispatched": "dispatch",
    "first token": "backend",
    "done": "backend",
}


def _timeline(traced: Traced) -> str:
    marks = traced.marks
    steps = marks.steps()
    start, end = steps[0][1], steps[-1][1]
    span = max(end - start, 1e-6)
    items = []
    for i, (what, at) in enumerate(steps):
        prev = steps[i - 1][1] if i else at
        left = (prev - start) / span * 100
        width = (at - prev) / span * 100
        colour = LEG_COLOURS.get(_ENDS.get(what, ""), "#0b5cad")
        items.append(
            f'<li id="step-{what.replace(" ", "-")}"><span><b>{escape(what)}</b></span>'
            f'<span class="track" aria-hidden="true"><span class="leg" style="margin-left:'
            f'{left:.2f}%;width:{width:.2f}%;background:{colour}"></span></span>'
            f'<span class="n">+{(at - start) * 1000:,.1f} ms</span></li>'
        )
    legs = marks.legs()
    total = sum(legs.values()) or 1.0
    rows = "".join(
        f'<tr id="leg-{leg}"><th scope="row"><span class="swatch" style="background:'
        f'{LEG_COLOURS[leg]}"></span>{leg}</th><td class="n">{legs[leg]:.1f} ms</td>'
        f'<td class="n">{legs[leg] / total * 100:.1f} %</td><td>{escape(LEG_HELP[leg])}</td></tr>'
        for leg in LEGS
        if leg in legs
    )
    return (
        f'<ol class="timeline" aria-label="The moments of this request">{"".join(items)}</ol>'
        '<div class="scroll"><table id="legs"><thead><tr><th scope="col">leg</th>'
        '<th scope="col" class="n">time</th><th scope="col" class="n">share</th>'
        f'<th scope="col">what it is</th></tr></thead><tbody>{rows}</tbody><tfoot><tr>'
        f'<th scope="row">all</th><td class="n" id="legs-total">{total:.1f} ms</td>'
        "<td></td><td>from received to done</td></tr></tfoot></table></div>"
    )


def _facts(traced: Traced) -> str:
    t = traced.task
    error = (t.error or {}).get("code") if isinstance(t.error, dict) else None
    facts = [
        ("model", escape(t.llm)),
        ("key", f"<code>{escape(t.client_key or '—')}</code>"),
        ("kind", t.kind.value + (" (stream)" if t.stream else "")),
        ("API", escape(t.endpoint)),
        ("state", status(t.state.value)),
        ("status", str(t.status or "—")),
        ("error", escape(str(error or "—"))),
        ("served by", escape(fingerprint(t.claimed_by) if t.claimed_by else "—")),
        ("attempts", str(t.attempts)),
        ("woke", "yes (joined a wake)" if t.wake_id else "no"),
        ("trace", f"<code>{escape(t.traceparent or '—')}</code>"),
    ]
    rows = "".join(f'<tr><th scope="row">{k}</th><td>{v}</td></tr>' for k, v in facts)
    return f'<div class="scroll"><table id="facts"><tbody>{rows}</tbody></table></div>'


async def _text(relay: Relay, task: TaskRecord) -> str:
    request_body, result = await asyncio.gather(relay.tasks.request(task), relay.tasks.result(task))

    def shown(data: bytes | None) -> str:
        text = (data or b"").decode("utf-8", "replace")
        cut = text[:SHOWN_BYTES] + ("…" if len(text) > SHOWN_BYTES else "")
        return f"<pre>{escape(cut) or '—'}</pre>"

    return f"<h2>Request</h2>{shown(request_body)}<h2>Answer</h2>{shown(result)}"


async def request(request: Request, relay: Relay, visit: Visit) -> Response:
    task_id = request.path_params["task_id"]
    traced = await relay.recent.traced(task_id)
    if traced is None:
        body = f"<p>There is no request {escape(task_id)} (or it is no longer kept).</p>"
        return page(visit, "Request not found", body, status=404)
    body = (
        f'<p class="muted">Request <code>{escape(traced.task.id)}</code></p>'
        + _facts(traced)
        + '<h2 id="h-timeline">Timeline</h2>'
        + _timeline(traced)
    )
    if relay.settings.console_show_text:
        body += await _text(relay, traced.task)
    return page(visit, "Request", body)
