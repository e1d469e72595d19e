"""The console's overview (`/console`): a list of sections, each a table fed by a view of
the service. It reloads itself every 10 s.

Adding a kind of thing to the overview is adding a `Section` to SECTIONS: a loader (what
the service says of it) and its columns. A queue per priority class is a column per
class, built from the row's view.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any, Generic, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from natrelay.service import Relay
from natrelay.service.board import AgentState, KeyToday, RowState
from natrelay.store import MemberRecord
from natrelay.web.console.html import Column, ago, number, stamp, status, table
from natrelay.web.console.pages import Visit, page
from natrelay.wire import Priority, fingerprint

REFRESH_SECONDS = 10
T = TypeVar("T")


class Snapshot:
    """What the sections of one page load read, each read once (sections share them)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.now = relay.clock()
        self._rows: asyncio.Future[list[RowState]] | None = None

    def rows(self) -> Awaitable[list[RowState]]:
        if self._rows is None:
            self._rows = asyncio.ensure_future(self.relay.board.rows())
        return self._rows


@dataclass(frozen=True)
class Section(Generic[T]):
    key: str
    title: str
    load: Callable[[Snapshot], Awaitable[Sequence[T]]]
    columns: Callable[[Snapshot], Sequence[Column[T]]]
    row_id: Callable[[T], str]
    empty: str = "none yet"

    async def html(self, snap: Snapshot) -> str:
        items = await self.load(snap)
        count = f" ({len(items)})" if items else ""
        return (
            f'<section aria-labelledby="h-{self.key}"><h2 id="h-{self.key}">'
            f"{escape(self.title)}{count}</h2>"
            + table(self.key, self.columns(snap), items, self.row_id, self.empty)
            + "</section>"
        )


def _members(r: RowState) -> str:
    if r.row.public:
        return "—"
    shown = ", ".join(f"{fingerprint(m.session_id)} ({m.status.value})" for m in r.members)
    return escape(shown or "none")


def _waiting_of(priority: Priority) -> Callable[[RowState], str]:
    """A row's requests of one class waiting, and the longest wait."""

    def cell(r: RowState) -> str:
        queued = r.classes.get(priority)
        if r.row.public:
            return "—"
        if queued is None or not queued.depth:
            return "0"
        return f"{number(queued.depth)} (up to {queued.oldest_seconds or 0:.0f}&nbsp;s)"

    return cell


def _hour(r: RowState, i: int) -> str:
    return "—" if r.recent is None else number(r.recent.last_hour[i])


def _row_columns(snap: Snapshot) -> list[Column[RowState]]:
    now = snap.now
    dash = "—"
    return [
        Column("name", lambda r: f"<b>{escape(r.row.name)}</b>"),
        Column("kind", lambda r: escape(r.row.kind)),
        Column("status", lambda r: status(r.status.value)),
        Column("members", _members),
        Column("capacity", lambda r: dash if r.row.public else number(r.capacity), True),
        Column("queue", lambda r: dash if r.row.public else number(r.queue_depth), True),
        *(Column(f"{p.value}&nbsp;waiting", _waiting_of(p), True) for p in Priority),
        Column("waking", lambda r: "yes" if r.waking else "no"),
        Column("fallbacks", lambda r: escape(", ".join(r.row.fallbacks)) or dash),
        Column(
            "served by a fallback today",
            lambda r: dash if r.recent is None else number(r.recent.today.fallbacks),
            True,
        ),
        Column(
            "last&nbsp;heartbeat",
            lambda r: dash if r.row.public else ago(r.row.last_heartbeat_at, now),
        ),
        Column("requests (1&nbsp;h)", lambda r: _hour(r, 0), True),
        Column("errors (1&nbsp;h)", lambda r: _hour(r, 1), True),
        Column(
            "tokens today",
            lambda r: (
                dash
                if r.recent is None
                else number(r.recent.today.prompt + r.recent.today.completion)
            ),
            True,
        ),
    ]


async def _member_list(snap: Snapshot) -> list[tuple[RowState, MemberRecord]]:
    return [(r, m) for r in await snap.rows() for m in r.members]


Member = tuple[RowState, MemberRecord]


def _member_columns(snap: Snapshot) -> list[Column[Member]]:
    now = snap.now
    return [
        Column("row", lambda rm: escape(rm[0].row.name)),
        Column("member", lambda rm: escape(fingerprint(rm[1].session_id))),
        Column("status", lambda rm: status(rm[1].status.value)),
        Column("max at once", lambda rm: number(rm[1].max_concurrency), True),
        Column(
            "running now (all its rows)",
            lambda rm: number(rm[0].running.get(rm[1].session_id)),
            True,
        ),
        Column("wakes", lambda rm: "yes" if rm[1].wake_max_wait is not None else "no"),
        Column("doorbell", lambda rm: "yes" if rm[1].doorbell else "no"),
        Column("serves", lambda rm: escape(", ".join(sorted(rm[1].endpoints)))),
        Column("last&nbsp;heartbeat", lambda rm: ago(rm[1].heartbeat_at, now)),
    ]


def _key_columns(snap: Snapshot) -> list[Column[KeyToday]]:
    def used(field: str) -> Callable[[KeyToday], str]:
        return lambda k: number(getattr(k.usage, field) if k.usage else 0)

    return [
        Column("key", lambda k: f"<code>{escape(k.key_id)}</code>"),
        Column(
            "label",
            lambda k: escape(k.label) + (" <span class=inactive>(revoked)</span>" * k.revoked),
        ),
        Column("role", lambda k: k.role.value),
        Column("requests", used("requests"), True),
        Column("prompt tokens", used("prompt_tokens"), True),
        Column("completion tokens", used("completion_tokens"), True),
        Column("errors", used("errors"), True),
        Column("refused", used("refused"), True),
    ]


def _agent_columns(snap: Snapshot) -> list[Column[AgentState]]:
    def hour(i: int) -> Callable[[AgentState], str]:
        return lambda a: "—" if a.recent is None else number(a.recent.last_hour[i])

    def target(a: AgentState) -> str:
        spec = a.agent.agent
        assert spec is not None
        return escape(spec.target or f"model {spec.target_model}")

    return [
        Column("name", lambda a: f"<b>{escape(a.agent.name)}</b>"),
        Column(
            "origin",
            lambda a: "publisher" if a.agent.agent and a.agent.agent.published else "admin",
        ),
        Column("target", target),
        Column("status", lambda a: status(a.status.value)),
        Column("requests (1&nbsp;h)", hour(0), True),
        Column("errors (1&nbsp;h)", hour(1), True),
    ]


async def _agents(snap: Snapshot) -> list[AgentState]:
    return await snap.relay.board.agent_states()


async def _keys(snap: Snapshot) -> list[KeyToday]:
    return await snap.relay.board.keys_today()


async def _rows(snap: Snapshot) -> list[RowState]:
    return await snap.rows()


# The overview, in order.
SECTIONS: list[Section[Any]] = [
    Section("rows", "Rows", _rows, _row_columns, lambda r: f"row-{r.row.name}"),
    Section(
        "members",
        "Pool members",
        _member_list,
        _member_columns,
        lambda rm: f"member-{rm[0].row.name}-{fingerprint(rm[1].session_id)}",
    ),
    Section("agents", "Agents", _agents, _agent_columns, lambda a: f"agent-{a.agent.name}"),
    Section("keys-today", "Keys today (UTC)", _keys, _key_columns, lambda k: f"key-{k.key_id}"),
]


async def overview(request: Request, relay: Relay, visit: Visit) -> Response:
    snap = Snapshot(relay)
    parts = await asyncio.gather(*(s.html(snap) for s in SECTIONS))
    head = f'<p class="muted">{stamp(snap.now)} UTC · reloads every {REFRESH_SECONDS} s</p>'
    return page(visit, "Overview", head + "".join(parts), refresh=REFRESH_SECONDS)
