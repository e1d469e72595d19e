"""The console's latency page (`/console/latency`): per row and hour, p50/p95 of the time
to the first token and of whole answers, and where the time went (the legs of
service.timeline, averaged)."""

from __future__ import annotations

from html import escape

from starlette.requests import Request
from starlette.responses import Response

from natrelay.service import Relay
from natrelay.service.history import RowLatency
from natrelay.service.timeline import LEGS
from natrelay.web.console import charts
from natrelay.web.console.charts import Series
from natrelay.web.console.pages import Visit, page

HOURS = 24
LEG_COLOURS = {
    "relay": "#767676",
    "wake": "#6A3D9A",
    "queue": "#D55E00",
    "dispatch": "#B8860B",
    "backend": "#0072B2",
}
LEG_HELP = {
    "relay": "the relay's own work before queueing",
    "wake": "waiting for a sleeping backend",
    "queue": "no member asking for work (all busy, between polls, or a ring on its way)",
    "dispatch": "from a member asking to holding the task",
    "backend": "the publisher and its backend, to the answer's end",
}


def _row(index: int, labels: list[str], row: RowLatency) -> str:
    key = f"r{index}"
    hours = row.hours
    times = charts.lines(
        f"{key}-times",
        f"{row.name}: time to first token and whole answers",
        labels,
        [
            Series("first token p50", [h.first_token[0] for h in hours], "#009E73"),
            Series("first token p95", [h.first_token[1] for h in hours], "#6A3D9A"),
            Series("whole p50", [h.whole[0] for h in hours], "#0072B2"),
            Series("whole p95", [h.whole[1] for h in hours], "#D55E00"),
        ],
        corner="hour (UTC)",
    )
    legs = charts.bars(
        f"{key}-legs",
        f"{row.name}: where an average request's time went",
        labels,
        [
            Series(leg, [h.legs.get(leg) if h.legs else None for h in hours], LEG_COLOURS[leg])
            for leg in LEGS
        ],
        corner="hour (UTC)",
        fmt=charts.duration,
    )
    counts = ", ".join(f"{h.hour[11:]}h {h.requests}" for h in hours if h.requests)
    return (
        f'<section aria-labelledby="h-{key}" id="latency-{escape(row.name)}">'
        f'<h2 id="h-{key}">{escape(row.name)}</h2>'
        f'<p class="muted">Requests per hour: {escape(counts)}</p>'
        f'<div class="charts">{times}{legs}</div></section>'
    )


async def latency(request: Request, relay: Relay, visit: Visit) -> Response:
    hour_labels, rows = await relay.history.latency(HOURS)
    labels = [f"{h[11:]}h" for h in hour_labels]
    help_items = "".join(
        f'<li><span class="swatch" style="background:{LEG_COLOURS[leg]}"></span>'
        f"<b>{leg}</b>: {escape(LEG_HELP[leg])}</li>"
        for leg in LEGS
    )
    intro = (
        f'<p class="muted">The last {HOURS} hours (UTC), per row. Percentiles are read from '
        "histograms whose buckets are 19 % wide (within 9 %).</p>"
        f'<details><summary>What the legs are</summary><ul class="plain">{help_items}</ul>'
        "</details>"
    )
    body = "".join(_row(i, labels, r) for i, r in enumerate(rows)) or (
        '<p class="muted" id="latency-none">No requests in these hours.</p>'
    )
    return page(visit, "Latency", intro + body)
