"""The publisher's side of a task: long-poll and claim, fetch the request, post
chunks and the result."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from natrelay.errors import (
    ForbiddenError,
    RateLimitError,
)
from natrelay.service.access import Principal
from natrelay.service.affinity import Affinity
from natrelay.service.context import Context
from natrelay.service.dispatch import in_queue_order, leaves_to_others
from natrelay.service.empty_queues import EmptyQueues
from natrelay.service.endings import Endings, PoolHint
from natrelay.service.failover import Failover
from natrelay.service.fencing import chunk_differs, refused
from natrelay.service.local_polls import LocalPolls
from natrelay.service.metering import relayed_in
from natrelay.service.payloads import (
    MAX_CHUNK_BATCH_BYTES,
    POLL_INLINE_BUDGET,
    check_size,
    clipped_error,
    dumps,
)
from natrelay.service.sessions import Sessions
from natrelay.service.speeds import Speeds
from natrelay.service.wakes import Wakes
from natrelay.store import (
    Chunk,
    ChunkDiffersError,
    ConditionFailedError,
    Holder,
    SameResultError,
    SessionRecord,
    TaskRecord,
)
from natrelay.wakeups import pool_topic
from natrelay.wire import ChunkBatch, LlmStatus, PollRequest, TaskKind, TaskResult, TaskState

# A poll reads this many entries of a pool's queue past its free slots: wakes meant for
# other members sort first, and must not hide the tasks this member may take.
_LOOK_PAST = 2


class Claims:
    def __init__(
        self,
        ctx: Context,
        sessions: Sessions,
        wakes: Wakes,
        endings: Endings,
        *,
        polls: LocalPolls,
        empty: EmptyQueues,
        failover: Failover,
        affinity: Affinity,
        speeds: Speeds,
    ) -> None:
        self.ctx = ctx
        self.affinity = affinity
        self.speeds = speeds
        self.tasks = ctx.tasks
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.wakeups = ctx.wakeups
        self.sessions = sessions
        self.wakes = wakes
        self.endings = endings
        self.polls = polls
        self.empty = empty
        self.failover = failover
        # Polls waiting in this process, by session.
        self._waiting: dict[str, int] = {}
        # Tasks a poll of this process is claiming now (the others leave them be).
        self._taking: set[str] = set()
        self._returning: set[asyncio.Task[None]] = set()

    async def poll(
        self,
        principal: Principal,
        req: PollRequest,
        gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> list[TaskRecord]:
        """Claim up to maxTasks pending tasks, waiting up to waitSeconds for some.

        Requests past the poll's inline budget come back without their body (the
        publisher fetches them). `gone` says whether the publisher hung up: a poll nobody
        waits for ends at once (no heartbeat) instead of claiming tasks into the void."""
        session = await self.sessions.polling_session(principal, req)
        if req.max_tasks == 0:
            return []
        with self._one_of_the_polls(session.id):
            return await self._poll(principal, req, session, gone)

    @contextmanager
    def _one_of_the_polls(self, session_id: str) -> Iterator[None]:
        """Count the session's polls waiting in this process; RateLimitError past the cap."""
        cap = self.settings.max_polls_per_session
        waiting = self._waiting.get(session_id, 0)
        if waiting >= cap:
            raise RateLimitError(
                f"this session already has {cap} polls waiting at once (the most a relay "
                "process keeps); poll again when one has answered",
                retry_after=1,
            )
        self._waiting[session_id] = waiting + 1
        try:
            yield
        finally:
            left = self._waiting.pop(session_id, 1) - 1
            if left:
                self._waiting[session_id] = left

    async def _poll(
        self,
        principal: Principal,
        req: PollRequest,
        session: SessionRecord,
        gone: Callable[[], Awaitable[bool]] | None,
    ) -> list[TaskRecord]:
        beat_at = session.heartbeat_at
        await self.tasks.spill_expired(self.clock())  # a sweep elsewhere cannot see them
        asked = self.clock()  # when a member asked: a task's timeline (service.timeline)
        deadline = asked + req.wait_seconds
        pace = self.ctx.pace()
        hints: list[PoolHint] = []
        topics = [pool_topic(name) for name in session.names]
        with (
            self.wakeups.listen(*topics) as listener,
            self.polls.offering(session, self._slots(session, req), listener) as offer,
        ):
            try:
                rung = await self._claim_rung(session, req, asked)  # the doorbell's, by id
                if rung:
                    return rung
                # From now on the fast path may hand tasks to this poll, even while it
                # re-checks DynamoDB; what it claims there counts against the same slots.
                offer.idle = True
                while True:
                    if gone is not None and await gone():
                        offer.idle = False
                        await self.polls.give_back(session.id, offer.take())
                        if req.running or await self.tasks.held_by(session.id):
                            # a member that holds tasks hung up: dead, or just polling anew?
                            self.failover.suspect(session, self.clock())
                        return []
                    # handed while it waited: no need to look at DynamoDB now
                    claimed = (
                        []
                        if offer.mailbox
                        else await self._claim(session, hints, offer.slots, asked)
                    )
                    now = self.clock()
                    if claimed or offer.mailbox or now >= deadline:
                        offer.idle = False  # nothing more is handed to it: it answers
                        handed = await self.polls.current(session.id, offer.take())
                        # a long-poll's publisher polls again at once: park tasks meanwhile
                        offer.answered = req.wait_seconds > 0
                        return claimed + [self._inline(self._told(session, t)) for t in handed]
                    if now - beat_at >= self.sessions.refresh_seconds:
                        session = await self.sessions.polling_session(principal, req)
                        offer.session = session
                        beat_at = session.heartbeat_at
                    await pace.wait(listener, deadline - now)
                    hints = [h for h in listener.take() if isinstance(h, PoolHint)]
            except BaseException:
                self._give_back_later(session.id, offer.take())
                raise

    def _slots(self, session: SessionRecord, req: PollRequest) -> dict[str, int]:
        """How many tasks of each pool this poll may take."""
        if req.free is None:
            return dict.fromkeys(session.names, req.max_tasks)
        return {name: min(req.free.get(name, 0), req.max_tasks) for name in session.names}

    def _takes(self, session: SessionRecord, name: str, entry: PoolHint) -> bool:
        """Whether this session may take a queued task of pool `name` (skipping it lets
        the member it is meant for take it)."""
        if entry.target_session is not None:
            return entry.target_session == session.id  # a wake: only its member
        if leaves_to_others(session.id, entry, self.clock(), self.speeds):
            return False
        if session.statuses.get(name) is LlmStatus.UNAVAILABLE:
            return False  # its backend does not answer: the pool's other members take it
        if session.statuses.get(name) is LlmStatus.HIBERNATING:
            # asleep: only the requests that wait for this member's own wake
            return entry.wake_target == session.id
        return True

    async def _claim(
        self, session: SessionRecord, hints: list[PoolHint], slots: dict[str, int], asked: float
    ) -> list[TaskRecord]:
        """Claim what this session may take: wakes meant for it, and up to its free slots
        of each pool's queue, in queue order (what the index lists, and the tasks this
        process was told of that it does not list yet); `slots` are taken from as it
        claims."""
        out: list[TaskRecord] = []
        budget = POLL_INLINE_BUDGET
        for name in session.names:
            told = [h for h in hints if h.llm == name]
            if told and self.empty.holds_only(name, len(told)):
                listed = []  # nothing but what it was told of waits: no Query
            else:
                listed = [
                    PoolHint(
                        q.id,
                        name,
                        q.target_session,
                        q.wake_target,
                        q.prefer,
                        q.prefer_until,
                        q.queued_at,
                        q.order,
                    )
                    for q in await self.empty.pending(name, slots.get(name, 0) + _LOOK_PAST)
                ]
            for entry in in_queue_order(listed, told):
                wake = entry.target_session is not None
                if (not wake and slots.get(name, 0) <= 0) or not self._takes(session, name, entry):
                    continue
                if entry.task_id in self._taking:
                    continue  # another poll of this process is claiming it
                task = await self._claim_one(session, entry.task_id, asked=asked)
                if task is None:
                    continue
                if not wake:
                    slots[name] -= 1
                task = self._told(session, task)
                if task.request is not None and len(task.request) <= budget:
                    budget -= len(task.request)
                else:
                    task = replace(task, request=None)
                out.append(task)
        return out

    async def _claim_rung(
        self, session: SessionRecord, req: PollRequest, asked: float
    ) -> list[TaskRecord]:
        """Claim the tasks the publisher names (its doorbell rang for them): only tasks of
        the session's own pools, and no more of each than its free slots."""
        slots = self._slots(session, req)
        out: list[TaskRecord] = []
        for task_id in req.task_ids:
            task = await self._claim_one(session, task_id, llms=session.names, asked=asked)
            if task is None:
                continue
            if task.kind is TaskKind.INFER:
                slots[task.llm] = slots.get(task.llm, 0) - 1
            out.append(self._inline(self._told(session, task)))
        return out

    def _give_back_later(self, session_id: str, tasks: list[TaskRecord]) -> None:
        if tasks:  # the poll was cancelled (its publisher hung up): not in its own task
            job = asyncio.get_running_loop().create_task(self.polls.give_back(session_id, tasks))
            self._returning.add(job)
            job.add_done_callback(self._returning.discard)

    @staticmethod
    def _inline(task: TaskRecord) -> TaskRecord:
        if task.request is not None and len(task.request) > POLL_INLINE_BUDGET:
            return replace(task, request=None)  # too large to come with the poll
        return task

    @staticmethod
    def _told(session: SessionRecord, task: TaskRecord) -> TaskRecord:
        """The task as its session's publisher is told of it."""
        if task.wake_id and task.wake_target != session.id:
            task = replace(task, wake_id=None)  # another member's wake: do not wait
        return task

    async def _claim_one(
        self,
        session: SessionRecord,
        task_id: str,
        llms: tuple[str, ...] | None = None,
        *,
        asked: float,
    ) -> TaskRecord | None:
        self._taking.add(task_id)
        try:
            task = await self.tasks.claim(
                task_id,
                session.id,
                key=session.owner or "",
                generation=session.generation,
                now=self.clock(),
                llms=llms,
                asked=asked,
            )
            self.affinity.claimed(task)
            return task
        except ConditionFailedError as exc:
            old = exc.record
            if (
                isinstance(old, TaskRecord)
                and old.state is TaskState.PENDING
                and old.expired(self.clock())
            ):
                await self.endings.fail_expired(old)
            return None  # another poll won it, it was cancelled, or it expired
        finally:
            self._taking.discard(task_id)

    async def task_request(self, principal: Principal, task_id: str, session_id: str) -> bytes:
        """The request of a task this session of the caller's key claimed."""
        task = await self.tasks.get(task_id, self.clock())
        if task is None or task.claimed_by != session_id or task.claimed_key != principal.key_id:
            raise ForbiddenError(
                f"task {task_id} is not claimed by this session", param="providerSessionId"
            )
        return await self.tasks.request(task)

    async def post_chunks(self, principal: Principal, task_id: str, batch: ChunkBatch) -> int:
        """Store a chunk batch of a claimed task; returns its seq."""
        data = dumps(batch.chunks)
        check_size(
            data,
            MAX_CHUNK_BATCH_BYTES,
            "a chunk batch may hold at most {limit} bytes; post smaller batches",
            param="chunks",
        )
        holder = Holder(batch.provider_session_id, principal.key_id)
        chunk, now = Chunk(seq=batch.seq, data=data), self.clock()
        try:
            await self.tasks.add_chunk(
                task_id,
                holder,
                chunk,
                now=now,
                expires_at=self.ctx.chunk_expiry(now),
                # its text bytes: what the task's usage is bounded by (service.metering)
                relayed=relayed_in(batch.chunks),
            )
        except ChunkDiffersError as exc:
            raise chunk_differs(task_id, batch.seq) from exc
        except ConditionFailedError as exc:
            raise refused(task_id, holder, exc) from exc
        self.endings.notify(task_id, chunk, len(data))
        return batch.seq

    async def post_result(
        self, principal: Principal, task_id: str, result: TaskResult
    ) -> TaskRecord:
        now = self.clock()
        error = clipped_error(result.error.model_dump(exclude_none=True)) if result.error else None
        body = dumps(result.body) if result.body is not None else None
        if body is not None:
            check_size(
                body, self.settings.max_body_bytes, "a result may be at most {limit} bytes", "body"
            )
        holder = Holder(result.provider_session_id, principal.key_id)
        try:
            task = await self.tasks.store_result(
                task_id,
                holder,
                state=TaskState.FAILED if error else TaskState.COMPLETED,
                status=result.status,
                body=body,
                error=error,
                chunk_count=result.chunk_count,
                now=now,
                expires_at=self.ctx.result_expiry(now),
            )
        except SameResultError as exc:
            assert isinstance(exc.record, TaskRecord)
            return exc.record  # posted again (a retry): harmless, and counted once
        except ConditionFailedError as exc:
            raise refused(task_id, holder, exc) from exc
        if task.kind is TaskKind.INFER and error is None and task.claimed_at is not None:
            self.speeds.observe(task.llm, holder.session_id, now - task.claimed_at)
        if task.kind is TaskKind.WAKE:
            ok = error is None and isinstance(result.body, dict) and bool(result.body.get("ok"))
            await self.wakes.finished(task, ok, error)
        await self.endings.answered(task, body=result.body, error=error is not None)
        return task
