"""Small pieces of HTML the console's pages share: tables declared as columns, times."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape, unescape
from typing import Generic, TypeVar

T = TypeVar("T")
_TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class Column(Generic[T]):
    """A column of a table: its header and the HTML of its cell for one item (the cell
    escapes what it shows)."""

    header: str
    cell: Callable[[T], str]
    numeric: bool = False


def table(
    table_id: str,
    columns: Sequence[Column[T]],
    items: Sequence[T],
    row_id: Callable[[T], str] | None = None,
    empty: str = "none",
) -> str:
    if not items:
        return f'<p class="muted" id="{table_id}">{escape(empty)}</p>'
    head = "".join(
        f'<th scope="col"{" class=n" if c.numeric else ""}>{c.header}</th>' for c in columns
    )
    rows = []
    labels = [escape(_TAG.sub("", unescape(c.header)).replace("\xa0", " ")) for c in columns]
    for item in items:
        ident = f' id="{escape(row_id(item))}"' if row_id is not None else ""
        cells = "".join(
            f'<td data-label="{label}"{" class=n" if c.numeric else ""}>{c.cell(item)}</td>'
            for c, label in zip(columns, labels, strict=True)
        )
        rows.append(f"<tr{ident}>{cells}</tr>")
    return (
        f'<div class="scroll"><table id="{table_id}" class="cards"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def ago(ts: float | None, now: float) -> str:
    if not ts:
        return "—"
    seconds = max(0, int(now - ts))
    if seconds < 120:
        return f"{seconds} s ago"
    return f"{seconds // 60} min ago" if seconds < 7200 else f"{seconds // 3600} h ago"


def stamp(ts: float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return datetime.fromtimestamp(ts, UTC).strftime(fmt)


def number(n: int | float | None) -> str:
    return "—" if n is None else f"{n:,.0f}".replace(",", "\u202f")


def status(value: str) -> str:
    return f'<span class="{escape(value)}">{escape(value)}</span>'
