"""The polls this process holds (server mode, the fast path): who takes a request now.

A poll that waits idle here is on offer for the pools it has free slots in; a request
for such a pool goes to it at once, claimed for its session (TaskStorage.put_claimed:
the memory tier holds it), instead of through the pool's queue (never to a member much
slower than another of the pool: service.speeds). When no poll waits but
one of a long-polling member has just answered (its publisher polls again at once), the
request is parked for that member's next poll; what that poll does not come for within
PARK_SECONDS goes back to the pool's queue. Like the wake-ups, this only decides who
takes a task first: the task storage holds it, and its rules are the same wherever it is.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from natrelay.service.context import Context
from natrelay.service.endings import Endings
from natrelay.service.speeds import Speeds
from natrelay.store import LlmRecord, SessionRecord, TaskRecord
from natrelay.wakeups import Listener
from natrelay.wire import LlmStatus, TaskState

# A long-polling session whose poll just answered takes tasks for its next poll this long
# (a publisher polls again at once); what that poll has not taken by then goes back to
# the pool's queue.
PARK_SECONDS = 1.0


@dataclass(eq=False)
class Offer:
    """A poll of this process that takes tasks handed to it while it waits idle."""

    session: SessionRecord
    slots: dict[str, int]
    listener: Listener
    idle: bool = False
    mailbox: list[TaskRecord] = field(default_factory=list)
    # Set when the poll answers its publisher (which polls again at once): tasks may be
    # handed to the session's next poll meanwhile ("parked").
    answered: bool = False

    def take(self) -> list[TaskRecord]:
        out, self.mailbox = self.mailbox, []
        return out


@dataclass(eq=False)
class Parked:
    """Tasks handed to a session between two of its polls: its next poll returns them."""

    session: SessionRecord
    slots: dict[str, int]
    until: float
    box: list[TaskRecord] = field(default_factory=list)


Taker = Offer | Parked


class LocalPolls:
    def __init__(self, ctx: Context, endings: Endings, speeds: Speeds, *, enabled: bool) -> None:
        self.ctx = ctx
        self.speeds = speeds
        self.tasks = ctx.tasks
        self.clock = ctx.clock
        self.endings = endings
        self.enabled = enabled
        # Idle polls by pool, longest waiting first (a dict used as an ordered set).
        self._offers: defaultdict[str, dict[Offer, None]] = defaultdict(dict)
        # Sessions between two polls, by id.
        self._parked: dict[str, Parked] = {}
        self._jobs: set[asyncio.Future[None]] = set()

    # --- the poll's side ---------------------------------------------------------------

    @contextmanager
    def offering(
        self, session: SessionRecord, slots: dict[str, int], listener: Listener
    ) -> Iterator[Offer]:
        """Offer this poll for the pools it may take tasks of (while `offer.idle`); the
        tasks parked for the session since its last poll are in its mailbox at once."""
        offer = Offer(session, slots, listener)
        names = [n for n, free in slots.items() if free > 0] if self.enabled else []
        for name in names:
            self._offers[name][offer] = None
        self._unpark(offer)
        try:
            yield offer
        finally:
            offer.idle = False
            for name in names:
                offers = self._offers.get(name)
                if offers is not None:
                    offers.pop(offer, None)
                    if not offers:
                        del self._offers[name]
            if offer.answered and self.enabled:
                self._park(offer)

    async def current(self, session_id: str, tasks: list[TaskRecord]) -> list[TaskRecord]:
        """Those of the tasks handed to a session that are still claimed for it, as they
        are now (its client may have left, or the pool taken one back)."""
        out: list[TaskRecord] = []
        for task in tasks:
            now = await self.tasks.get(task.id, self.clock())
            if now is not None and now.state is TaskState.CLAIMED and now.claimed_by == session_id:
                out.append(now)
        return out

    def _park(self, offer: Offer) -> None:
        """The poll answered: take tasks for the session's next poll for a moment."""
        sid, loop = offer.session.id, asyncio.get_running_loop()
        left = self._parked.get(sid)
        parked = Parked(offer.session, dict(offer.slots), loop.time() + PARK_SECONDS)
        parked.box = left.box if left is not None else []
        self._parked[sid] = parked
        loop.call_later(PARK_SECONDS, self._park_over, sid, parked)

    def _unpark(self, offer: Offer) -> None:
        """Move the tasks parked for the session into its new poll's mailbox (as many of
        each pool as the poll has slots; the rest wait for the next one)."""
        parked = self._parked.get(offer.session.id)
        if parked is None:
            return
        parked.slots = {}  # a poll is here: new tasks go to it, not to the box
        kept: list[TaskRecord] = []
        for task in parked.box:
            if offer.slots.get(task.llm, 0) > 0:
                offer.slots[task.llm] -= 1
                offer.mailbox.append(task)
            else:
                kept.append(task)
        parked.box = kept
        if not kept:
            del self._parked[offer.session.id]

    def _park_over(self, session_id: str, parked: Parked) -> None:
        if self._parked.get(session_id) is not parked:
            return  # a poll came (and maybe answered again)
        del self._parked[session_id]
        if parked.box:
            self._later(self.give_back(session_id, parked.box))

    async def give_back(self, session_id: str, tasks: list[TaskRecord]) -> None:
        """Tasks handed to a session's poll that did not return them go back to their
        pool (those still claimed for it)."""
        for task in await self.current(session_id, tasks):
            await self.endings.hand_back(task)

    def forget(self, session_id: str) -> None:
        """The session left: park nothing more for it."""
        self._parked.pop(session_id, None)

    # --- the request's side ------------------------------------------------------------

    def offers(self) -> list[Offer]:
        """The polls of this process on offer now (each once)."""
        return list(dict.fromkeys(o for offers in self._offers.values() for o in offers))

    def _taker(self, row: LlmRecord, prefer: str | None = None) -> Taker | None:
        """An idle poll that may take a task of the row; else a session between two
        polls that may (its next poll takes it). With `prefer`, only that session's."""
        now = self.clock()
        timeout = self.ctx.liveness.timeout
        member_ok = {
            sid
            for sid, m in row.members.items()
            if m.status is LlmStatus.ACTIVE and m.alive(now, timeout)
        }

        def ok(s: SessionRecord, slots: dict[str, int]) -> bool:
            return (
                slots.get(row.name, 0) > 0
                and s.id in member_ok
                and prefer in (None, s.id)
                and s.statuses.get(row.name) is not LlmStatus.HIBERNATING
            )

        def slow(s: SessionRecord) -> bool:  # a faster member serves the pool
            return self.speeds.handicap(row.name, s.id, member_ok) > 0

        for offer in self._offers.get(row.name, ()):
            if offer.idle and ok(offer.session, offer.slots) and not slow(offer.session):
                return offer
        then = asyncio.get_running_loop().time() if self._parked else 0.0
        for sid, parked in self._parked.items():
            # a member on the doorbell polls only when rung (its last long-poll was the
            # fallback's): nothing waits for it
            bell = sid in row.members and row.members[sid].doorbell is not None
            usable = parked.until > then and not bell and ok(parked.session, parked.slots)
            if usable and not slow(parked.session):
                return parked
        return None

    def can_take(self, row: LlmRecord, prefer: str | None = None) -> bool:
        """Whether a poll of this process (of session `prefer`, if named) takes a request
        for the row now."""
        return self.enabled and self._taker(row, prefer) is not None

    def take(self, row: LlmRecord, prefer: str | None = None) -> Taker | None:
        """A poll (or a parked session; of session `prefer`, if named) to hand a request
        for the row to, one of its slots for the row's pool held for it (None: none takes
        it now)."""
        taker = self._taker(row, prefer) if self.enabled else None
        if taker is not None:
            taker.slots[row.name] -= 1
        return taker

    def deliver(self, taker: Taker, task: TaskRecord) -> bool:
        """Give the task, claimed for the taker's session, to it; False if the taker is
        gone (its poll answered, or its session left, since `take`)."""
        if isinstance(taker, Parked):
            if self._parked.get(taker.session.id) is not taker:
                return False
            taker.box.append(task)
            return True
        if not taker.idle:
            return False
        taker.mailbox.append(task)
        offers = self._offers[task.llm]
        offers.pop(taker, None)
        offers[taker] = None  # to the back of the line: the pool's polls take turns
        taker.listener.set(None)
        return True

    # --- stopping ----------------------------------------------------------------------

    def _later(self, job: Awaitable[None]) -> None:
        future = asyncio.ensure_future(job)
        self._jobs.add(future)
        future.add_done_callback(self._jobs.discard)

    async def drain(self) -> None:
        """Wait for the tasks on their way back to their pools (the process is stopping)."""
        while self._jobs:
            await asyncio.gather(*self._jobs, return_exceptions=True)
