"""The console's usage page (`/console/usage`): requests, tokens and errors per day by
key and by model (row), and today's requests per hour; a table under every chart."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response

from natrelay.service import Relay
from natrelay.service.history import Daily
from natrelay.web.console import charts
from natrelay.web.console.charts import OTHERS, Series
from natrelay.web.console.pages import Visit, page
from natrelay.wire import Paths

SPANS = (7, 14, 30)
# The biggest this many keys or rows get a colour each; the rest are added up.
SHOWN = 6


def _series(dailies: Sequence[Daily], values: Callable[[Daily], list[int]]) -> list[Series]:
    shown = [Series(d.name, values(d)) for d in dailies[:SHOWN]]
    rest = dailies[SHOWN:]
    if rest:
        summed = [sum(v) for v in zip(*(values(d) for d in rest), strict=True)]
        shown.append(Series(f"{len(rest)} others", summed, OTHERS))
    return shown


def _group(prefix: str, what: str, days: list[str], dailies: Sequence[Daily]) -> str:
    if not dailies:
        return f'<p class="muted" id="{prefix}-none">No requests in these days.</p>'
    labels = [d[5:] for d in days]  # MM-DD
    corner = "day (UTC)"
    return '<div class="charts">' + "".join(
        charts.bars(f"{prefix}-{name}", f"{title} per day by {what}", labels,
                    _series(dailies, pick), corner=corner)
        for name, title, pick in (
            ("requests", "Requests", lambda d: d.requests),
            ("tokens", "Tokens", lambda d: d.tokens),
            ("errors", "Errors", lambda d: d.errors),
        )
    ) + "</div>"  # fmt: skip


def _spans(days: int) -> str:
    links = " · ".join(
        f"<b>{n} days</b>"
        if n == days
        else f'<a href="{Paths.CONSOLE_USAGE}?days={n}">{n} days</a>'
        for n in SPANS
    )
    return f'<p class="muted">Show: {links}</p>'


async def usage(request: Request, relay: Relay, visit: Visit) -> Response:
    raw = request.query_params.get("days", "30")
    days = int(raw) if raw.isdigit() and int(raw) in SPANS else 30
    h = await relay.history.usage_days(days)
    answered = [r - e for r, e in zip(h.today_requests, h.today_errors, strict=True)]
    today = charts.bars(
        "today",
        "Today's requests per hour (UTC), every model",
        [f"{x}h" for x in h.hours],
        [
            Series("answered", answered, charts.PALETTE[0]),
            Series("errors", h.today_errors, "#B00020"),
        ],
        corner="hour (UTC)",
    )
    body = (
        _spans(days) + f'<section aria-labelledby="h-today"><h2 id="h-today">Today</h2>'
        f'<div class="charts">{today}</div></section>'
        + '<section aria-labelledby="h-keys"><h2 id="h-keys">By key</h2>'
        + _group("keys", "key", h.days, h.by_key)
        + '</section><section aria-labelledby="h-models"><h2 id="h-models">By model</h2>'
        + _group("models", "model", h.days, h.by_row)
        + "</section>"
    )
    return page(visit, "Usage", body)
