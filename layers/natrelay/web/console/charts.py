"""Charts as server-rendered SVG: no script, no library, nothing fetched.

Each chart is a `<figure>`: the SVG (role="img", named by its title and a one-line
summary), a legend in text, and a table of the same numbers under it. Every column of
a chart is focusable (Tab) and names its numbers (a tooltip with the mouse, the label
with a screen reader). Colours keep a contrast of at least 3:1 on white, and series are
told apart by the legend and the table too, never by colour alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

# At least 3:1 against white (WCAG 1.4.11), and apart for the common colour blindness.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#6A3D9A", "#CC79A7", "#8C564B", "#B8860B")
OTHERS = "#767676"
WIDTH, HEIGHT = 560, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 10, 12, 36


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]
    colour: str = ""


Format = Callable[[float], str]


def count(value: float) -> str:
    return f"{value:,.0f}".replace(",", "\u202f")


def duration(ms: float) -> str:
    if ms >= 10_000:
        return f"{ms / 1000:.0f} s"
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


def _coloured(series: Sequence[Series]) -> list[Series]:
    return [
        s if s.colour else Series(s.name, s.values, PALETTE[i % len(PALETTE)])
        for i, s in enumerate(series)
    ]


def _nice_top(top: float, whole: bool) -> tuple[float, float]:
    """A round upper end for the axis, and its tick step (at most 5 steps; whole numbers
    only for counts)."""
    if top <= 0:
        return (4.0, 1.0) if whole else (1.0, 0.25)
    raw = top / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if whole else (1, 2, 2.5, 5, 10)
    step = next(m * magnitude for m in steps if m * magnitude >= raw)
    if whole:
        step = max(1.0, step)
    return step * math.ceil(top / step), step


def _frame(top: float, step: float, fmt: Format, labels: Sequence[str]) -> list[str]:
    """The axes: horizontal grid lines with their values, and every few x labels."""
    plot_h = HEIGHT - _TOP - _BOTTOM
    out = []
    ticks = round(top / step)
    for i in range(ticks + 1):
        y = _TOP + plot_h - plot_h * i / ticks
        out.append(
            f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'class="grid"/><text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(fmt(step * i))}</text>"
        )
    every = max(1, math.ceil(len(labels) / 6))
    slot = (WIDTH - _LEFT - _RIGHT) / max(1, len(labels))
    for i, label in enumerate(labels):
        if (len(labels) - 1 - i) % every == 0:  # the latest is always named
            x = _LEFT + slot * (i + 0.5)
            out.append(
                f'<text x="{x:.1f}" y="{HEIGHT - _BOTTOM + 20}" text-anchor="middle">'
                f"{escape(label)}</text>"
            )
    return out


def _figure(
    chart_id: str, title: str, summary: str, body: list[str], series: Sequence[Series]
) -> str:
    legend = "".join(
        f'<li><span class="swatch" style="background:{s.colour}"></span>{escape(s.name)}</li>'
        for s in series
    )
    return (
        f'<figure class="chart" id="{chart_id}"><figcaption>{escape(title)}</figcaption>'
        f'<div class="plot"><svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{chart_id}-t">{escape(title)}</title>'
        f'<desc id="{chart_id}-d">{escape(summary)}</desc>{"".join(body)}</svg></div>'
        f'<ul class="legend">{legend}</ul>'
        f"<details><summary>Table: {escape(title)}</summary>"
    )


def table(
    table_id: str, corner: str, labels: Sequence[str], series: Sequence[Series], fmt: Format
) -> str:
    """The chart's numbers: a row per x label, a column per series."""
    head = "".join(f'<th scope="col">{escape(s.name)}</th>' for s in series)
    rows = []
    for i, label in enumerate(labels):
        cells = "".join(
            f"<td>{'—' if s.values[i] is None else escape(fmt(s.values[i] or 0))}</td>"
            for s in series
        )
        rows.append(f'<tr><th scope="row">{escape(label)}</th>{cells}</tr>')
    return (
        f'<div class="scroll"><table id="{table_id}" class="numbers"><thead><tr>'
        f'<th scope="col">{escape(corner)}</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _summary(title: str, labels: Sequence[str], series: Sequence[Series], fmt: Format) -> str:
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(labels))]
    if not labels or not any(totals):
        return f"{title}: nothing yet."
    peak = max(range(len(labels)), key=lambda i: totals[i])
    return (
        f"{title}, {labels[0]} to {labels[-1]}: highest {fmt(totals[peak])} "
        f"({labels[peak]}). The table under the chart has every number."
    )


def bars(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    corner: str = "",
    fmt: Format = count,
) -> str:
    """Stacked bars: one column per label, one segment per series."""
    series = _coloured(series)
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(labels))]
    top, step = _nice_top(max(totals, default=0), fmt is count)
    body = _frame(top, step, fmt, labels)
    plot_h = HEIGHT - _TOP - _BOTTOM
    slot = (WIDTH - _LEFT - _RIGHT) / max(1, len(labels))
    bar_w = max(1.0, slot * 0.72)
    for i, label in enumerate(labels):
        x = _LEFT + slot * i + (slot - bar_w) / 2
        base = float(_TOP + plot_h)
        parts = [f"{label}: {fmt(totals[i])} in all"] if len(series) > 1 else []
        rects = []
        for s in series:
            value = float(s.values[i] or 0)
            parts.append(f"{s.name} {fmt(value)}")
            h = plot_h * value / top
            if h > 0:
                base -= h
                rects.append(
                    f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                    f'fill="{s.colour}"/>'
                )
        name = "; ".join(parts) if len(series) > 1 else f"{label}: {parts[0]}"
        # the whole column is the target: a thin bar is still easy to point at
        rects.insert(
            0,
            f'<rect x="{_LEFT + slot * i:.1f}" y="{_TOP}" width="{slot:.1f}" '
            f'height="{plot_h}" class="hit"/>',
        )
        body.append(
            f'<g class="col" tabindex="0" role="img" aria-label="{escape(name)}">'
            f"<title>{escape(name)}</title>{''.join(rects)}</g>"
        )
    summary = _summary(title, labels, series, fmt)
    numbers = table(f"{chart_id}-table", corner, labels, series, fmt)
    return _figure(chart_id, title, summary, body, series) + f"{numbers}</details></figure>"


def lines(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    corner: str = "",
    fmt: Format = duration,
) -> str:
    """Lines with a dot per point; a missing value (None) breaks its line."""
    series = _coloured(series)
    known = [v for s in series for v in s.values if v is not None]
    top, step = _nice_top(max(known, default=0), fmt is count)
    body = _frame(top, step, fmt, labels)
    plot_h = HEIGHT - _TOP - _BOTTOM
    slot = (WIDTH - _LEFT - _RIGHT) / max(1, len(labels))
    dashes = ("", ' stroke-dasharray="6 3"', ' stroke-dasharray="2 3"')
    for n, s in enumerate(series):
        points: list[list[str]] = [[]]
        dots = []
        for i, value in enumerate(s.values):
            if value is None:
                points.append([])
                continue
            x, y = _LEFT + slot * (i + 0.5), _TOP + plot_h - plot_h * value / top
            points[-1].append(f"{x:.1f},{y:.1f}")
            dots.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{s.colour}"/>')
        for run in points:
            if len(run) > 1:
                body.append(
                    f'<polyline points="{" ".join(run)}" fill="none" stroke="{s.colour}" '
                    f'stroke-width="2"{dashes[n % len(dashes)]}/>'
                )
        body.extend(dots)
    for i, label in enumerate(labels):
        parts = [f"{s.name} {fmt(s.values[i] or 0)}" for s in series if s.values[i] is not None]
        name = f"{label}: {'; '.join(parts) or 'no requests'}"
        body.append(
            f'<g class="col" tabindex="0" role="img" aria-label="{escape(name)}">'
            f'<title>{escape(name)}</title><rect x="{_LEFT + slot * i:.1f}" y="{_TOP}" '
            f'width="{slot:.1f}" height="{plot_h}" class="hit"/></g>'
        )
    peak = max(known, default=0)
    summary = f"{title}: highest {fmt(peak)}." if known else f"{title}: nothing yet."
    numbers = table(f"{chart_id}-table", corner, labels, series, fmt)
    return _figure(chart_id, title, summary, body, series) + f"{numbers}</details></figure>"
