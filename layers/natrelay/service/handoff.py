"""The fast path (long-lived mode): a request handed in memory to a poll of this process.

When a poll of a member that may take a request waits idle in this process, the task
skips DynamoDB on the way in: it is handed to the poll claimed, its chunks and result
come back in memory and the client is answered from them. When no poll waits but one of
a long-polling member has just answered (its publisher polls again at once), the task is
parked for that member's next poll. The task's durable record (the finished task item
with its request, result and chunks) is written behind the answer, in batches
(service.handed); the usage of keys without limits is added up the same way.

Anything off the happy path moves the task to DynamoDB as it stands ("spills" it) and
the durable lifecycle carries on from there: a client that stops waiting, a publisher
that dies, restarts or leaves, a poll that ends before it returned the task, a parked
task whose poll does not come (back to the pool's queue), a stream past its memory cap.
What this gives up: a process that dies between answering and the write loses the
record of an answered request (never an answer), and a task in flight is seen only by
this process (GET /api/v1/tasks/{id} elsewhere says 404 until it ends).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from natrelay.service.context import Context
from natrelay.service.handed import Handed, HandedTasks, pool_key, task_key
from natrelay.signals import Listener
from natrelay.store import LlmRecord, NewTask, SessionRecord, TaskRecord
from natrelay.wire import LlmStatus, TaskKind, TaskState

__all__ = ["Handoff", "Offer", "pool_key", "task_key"]

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


class Handoff(HandedTasks):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.enabled = ctx.settings.fast_path and ctx.signals.enabled
        # Idle polls by pool, longest waiting first (a dict used as an ordered set).
        self._offers: defaultdict[str, dict[Offer, None]] = defaultdict(dict)
        # Sessions between two polls, by id.
        self._parked: dict[str, Parked] = {}
        # What to do with tasks parked for a poll that did not come (Claims: back to
        # their pool's queue).
        self.undelivered: Callable[[list[TaskRecord]], Awaitable[None]] | None = None

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
        for task in self._deliverable(parked.box):
            if offer.slots.get(task.llm, 0) > 0:
                offer.slots[task.llm] -= 1
                offer.mailbox.append(task)
            else:
                kept.append(task)
        parked.box = kept
        if not kept:
            del self._parked[offer.session.id]

    def _deliverable(self, box: list[TaskRecord]) -> list[TaskRecord]:
        """The parked tasks still handed here and not ended (a client may have left)."""
        out = []
        for task in box:
            handed = self._tasks.get(task.id)
            if handed is not None and handed.leaving is None and not handed.task.state.done:
                out.append(handed.task)
        return out

    def _park_over(self, session_id: str, parked: Parked) -> None:
        if self._parked.get(session_id) is not parked:
            return  # a poll came (and maybe answered again)
        del self._parked[session_id]
        tasks = self._deliverable(parked.box)
        if tasks and self.undelivered is not None:
            self._later(self.undelivered(tasks))

    def offers(self) -> list[Offer]:
        """The polls of this process on offer now (each once)."""
        return list(dict.fromkeys(o for offers in self._offers.values() for o in offers))

    def _taker(self, row: LlmRecord) -> Offer | Parked | None:
        """An idle poll that may take a task of the row; else a session between two
        polls that may (its next poll takes it)."""
        member_ok = {
            sid
            for sid, m in row.members.items()
            if m.status is LlmStatus.ACTIVE and m.alive(self.clock(), self.ctx.liveness.timeout)
        }

        def ok(s: SessionRecord, slots: dict[str, int]) -> bool:
            return (
                slots.get(row.name, 0) > 0
                and s.id in member_ok
                and s.statuses.get(row.name) is not LlmStatus.HIBERNATING
            )

        for offer in self._offers.get(row.name, ()):
            if offer.idle and ok(offer.session, offer.slots):
                return offer
        now = asyncio.get_running_loop().time() if self._parked else 0.0
        for sid, parked in self._parked.items():
            # a member on the doorbell polls only when rung (its last long-poll was the
            # fallback's): nothing waits for it
            bell = sid in row.members and row.members[sid].doorbell is not None
            if parked.until > now and not bell and ok(parked.session, parked.slots):
                return parked
        return None

    def can_take(self, row: LlmRecord) -> bool:
        """Whether a poll of this process takes a request for the row now."""
        return self.enabled and self._taker(row) is not None

    def hand(
        self, row: LlmRecord, new: NewTask, *, settle_first: bool = False
    ) -> TaskRecord | None:
        """Hand the task claimed to an idle poll (None: none can take it now)."""
        taker = self._taker(row) if self.enabled and new.kind is TaskKind.INFER else None
        if taker is None:
            return None
        session, now = taker.session, self.clock()
        request = new.request or b""
        task = TaskRecord(
            id=new.id,
            kind=new.kind,
            llm=new.llm,
            session_id=session.id,
            state=TaskState.CLAIMED,
            created_at=new.created_at,
            lease_seconds=new.lease_seconds,
            updated_at=now,
            stream=new.stream,
            request_size=len(request),
            request=request,
            claimed_by=session.id,
            claimed_key=session.owner or "",
            claimed_at=now,
            claimed_generation=session.generation,
            lease_until=now + new.lease_seconds,
            attempts=1,
            client_key=new.client_key,
            usage_day=new.usage_day,
            slot=new.slot,
            reserved=new.reserved,
            expires_at=new.expires_at,
            endpoint=new.endpoint,
        )
        self._tasks[task.id] = Handed(task, request, settle_first=settle_first)
        taker.slots[row.name] -= 1
        if isinstance(taker, Parked):
            taker.box.append(task)
            return task
        taker.mailbox.append(task)
        offers = self._offers[row.name]
        offers.pop(taker)
        offers[taker] = None  # to the back of the line: the pool's polls take turns
        taker.listener.set(None)
        return task

    # --- what the relay knows of a handed task ------------------------------------------

    async def spill_session(self, session_id: str) -> list[TaskRecord]:
        self._parked.pop(session_id, None)
        return await super().spill_session(session_id)
