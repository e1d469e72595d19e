"""Affinity: a conversation goes back to the member whose prefix cache holds it.

llama.cpp, vLLM and Ollama keep the KV cache of recent prompts: a chat whose every turn
lands on another box recomputes its whole history each time. A request names its
conversation by its leading messages (the system prompt and first user message, which
every later turn repeats), or explicitly: the X-Natrelay-Session header or the body's
`user`. The member that ran the conversation's last task takes it if its poll is idle;
a request that goes on with the conversation (it carries history, or names its session)
waits for that member if it is busy: it alone may claim the task for
`affinity_wait_seconds`, or the member's measured time per task and a poll's re-check
if shorter (it frees a slot and takes the task within about that; the claim's condition
says so), then any member may. So a busy member makes its conversation wait a bounded
moment, never longer.

Who ran a conversation is remembered in this process (server mode: a bounded table,
entries expiring after `affinity_ttl_seconds`), or read from the tasks table's
byAffinity index (Lambda mode: one Query of one item per request that goes on with a
conversation; the claim that records it is a write the task gets anyway).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from natrelay.service.context import Context
from natrelay.service.endings import PoolHint
from natrelay.service.speeds import Speeds
from natrelay.store import LlmRecord, TaskRecord
from natrelay.types import JsonObject
from natrelay.wire import Endpoint, LlmStatus

# Conversations a process remembers at most (the least recently used go first).
MAX_CONVERSATIONS = 10_000
# Endpoints whose requests carry a conversation.
CONVERSING = frozenset({Endpoint.CHAT, Endpoint.RESPONSES, Endpoint.MESSAGES})


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _leading(items: Any) -> list[Any]:
    """A conversation's items up to its first user turn (what later turns repeat)."""
    if isinstance(items, str):
        return [items]
    if not isinstance(items, list):
        return []
    out: list[Any] = []
    for item in items:
        out.append(item)
        if isinstance(item, dict) and item.get("role") == "user":
            break
    return out


@dataclass(frozen=True)
class Talk:
    """What names a request's conversation (a digest), and whether the request goes on
    with one (it carries history, or names its session): only then is it worth a wait
    for the member whose cache holds the history."""

    digest: str
    continues: bool


def conversation(endpoint: Endpoint, body: JsonObject, named: str | None, key: str) -> Talk | None:
    """What names the request's conversation (None: nothing does): the session the
    caller names, else its `user`, else its leading messages."""
    if endpoint not in CONVERSING:
        return None
    if endpoint is Endpoint.RESPONSES:
        items = body.get("input")
        lead = [body.get("instructions"), *_leading(items)]
        history = isinstance(items, list) and len(items) > len(lead) - 1
        history = history or body.get("previous_response_id") is not None
    else:
        items = body.get("messages")
        lead = [body.get("system"), *_leading(items)]
        history = isinstance(items, list) and len(items) > len(lead) - 1
    if named is not None:
        return Talk(_digest("named", key, named), continues=True)
    user = body.get("user")
    metadata = body.get("metadata")
    if endpoint is Endpoint.MESSAGES and isinstance(metadata, dict):
        user = metadata.get("user_id")
    if isinstance(user, str):
        return Talk(_digest("user", key, user), continues=history)
    if all(x is None for x in lead):
        return None
    return Talk(_digest("lead", lead), continues=history)


def affinity_key(llm: str, digest: str) -> str:
    """The conversation in the pool of `llm` (conversations are per pool)."""
    return _digest(llm, digest)


@dataclass(frozen=True)
class Route:
    """A request's conversation in its pool (None: it names none), the member to hand
    it to if that member's poll is idle (None: any), and until when only that member
    may take it from the queue (None: any member may at once)."""

    key: str | None
    member: str | None
    prefer_until: float | None


@dataclass
class AffinityCounts:
    """What affinity did for a pool, in this process."""

    # Tasks taken by the member their conversation prefers, and by another (it was busy
    # past the wait, or left).
    hits: int = 0
    misses: int = 0


class Affinity:
    def __init__(self, ctx: Context, speeds: Speeds, *, in_memory: bool) -> None:
        self.speeds = speeds
        self.store = ctx.stores.affinity
        self.clock = ctx.clock
        self.liveness = ctx.liveness
        s = ctx.settings
        self.wait = s.affinity_wait_seconds
        self.recheck = s.poll_max_interval_seconds
        self.ttl = s.affinity_ttl_seconds
        self.in_memory = in_memory
        self.wakeups = ctx.wakeups
        self._telling: set[asyncio.Task[None]] = set()
        self._last: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._counts: defaultdict[str, AffinityCounts] = defaultdict(AffinityCounts)

    @property
    def enabled(self) -> bool:
        return self.wait > 0

    async def route(
        self, row: LlmRecord, talk: Talk | None, idle: Callable[[str], bool] | None
    ) -> Route:
        """Where the request goes: the member that ran its conversation last takes it if
        `idle` now (None: no poll of this process takes requests at once); a request
        that goes on with the conversation waits for that member a moment if it is not."""
        if talk is None:
            return Route(None, None, None)
        key = affinity_key(row.name, talk.digest)
        if idle is None and not talk.continues:
            return Route(key, None, None)  # nothing to look up for: no wait, no hand-off
        member = await self._member_for(row, key)
        if member is None:
            return Route(key, None, None)
        if talk.continues:
            # busy, it frees a slot within about a task's time (and takes the task within
            # a poll's re-check): never wait longer
            speed = self.speeds.of(row.name, member)
            soon = speed.seconds + self.recheck if speed is not None else self.wait
            wait = min(self.wait, soon)
            return Route(key, member, self.clock() + wait)
        return Route(key, member if idle is not None and idle(member) else None, None)

    async def _member_for(self, row: LlmRecord, key: str) -> str | None:
        """The live, active member that ran the conversation last (None: none)."""
        if not self.enabled:
            return None
        now = self.clock()
        if self.in_memory:
            last = self._last.get(key)
            session = last[0] if last is not None and last[1] > now - self.ttl else None
        else:
            session = await self.store.last_claimer(key, now - self.ttl, now)
        member = row.members.get(session) if session is not None else None
        if member is None or member.status is not LlmStatus.ACTIVE:
            return None
        return session if member.alive(now, self.liveness.timeout) else None

    def after_wait(
        self,
        tell: Callable[[PoolHint, LlmRecord], Coroutine[Any, Any, None]],
        hint: PoolHint,
        row: LlmRecord,
    ) -> None:
        """Tell the pool's polls of a task again once its member's moment is over (with
        in-process wake-ups; elsewhere polls re-check DynamoDB at their pace)."""
        if not self.wakeups.enabled:
            return
        loop = asyncio.get_running_loop()

        def later() -> None:
            job = loop.create_task(tell(hint, row))
            self._telling.add(job)
            job.add_done_callback(self._telling.discard)

        until = hint.prefer_until if hint.prefer_until is not None else self.clock()
        loop.call_later(max(0.0, until - self.clock()) + 0.1, later)  # (over by then)

    def claimed(self, task: TaskRecord) -> None:
        """A task was claimed (or handed to a poll): remember its conversation's member,
        and count whether affinity held."""
        if task.affinity is None or task.claimed_by is None:
            return
        if task.prefer is not None:
            counts = self._counts[task.llm]
            if task.prefer == task.claimed_by:
                counts.hits += 1
            else:
                counts.misses += 1
        if self.in_memory:
            self._last[task.affinity] = (task.claimed_by, self.clock())
            self._last.move_to_end(task.affinity)
            while len(self._last) > MAX_CONVERSATIONS:
                self._last.popitem(last=False)

    def counts(self, llm: str) -> AffinityCounts:
        return self._counts.get(llm) or AffinityCounts()
