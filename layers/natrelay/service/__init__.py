"""The relay's domain rules, one module per job; `Relay` holds them together, and
`service.assembly` (the one composition root) builds it from settings.

* a publisher: sessions (register, heartbeat, deregister, a poll's session) · pools
  (members leaving, tasks handed back) · claims (poll and claim, the request, chunks and
  the result) · local_polls (the polls this process holds: the fast path's hand-over and
  parking) · empty_queues (what a poll need not look up again) · doorbell (rings) ·
  abandoned (what a publisher runs that nobody wants any more)
* a client: queue (a request queued for its pool) · waiting (a client's wait and
  stream) · wakes (one wake per pool, across instances) · catalog (the rows clients see)
  · suggest (what an unknown model name meant) · upstream (public rows' calls) ·
  outcomes (how a task that did not complete fails)
* every task: endings (a task ended: its usage and waiters; force-finishing one) ·
  failover (a publisher that lost its tasks: they move to its pool) · fencing (why a
  write on a claimed task is refused)
* pools: dispatch (priority classes in the queue's order) · affinity (a conversation
  back to the member that ran it) · speeds (members' measured speed)
* agents: agents (which rows serve an agent, its status, admins' apply) ·
  agent_bodies (a request as an agent sends it)
* keys and rows: access (bearer tokens to principals) · keys (admins' keys) · usage
  (limits and counts per key) · metering (what a request may use, and used) · rows
  (admins' apply) · redaction (secrets out of relayed text)
* the console: board (the overview) · row_stats (each row's hours) · history (the
  charts' days) · recent (recent requests) · timeline (where a request spent its time) ·
  page_sessions (its logins)
* the sweep: sweep (liveness, retention, leases)
* shared: context (settings, stores, the task storage, clock, wake-ups) · liveness (the
  one rule) · payloads · ids · assembly (the composition root)

The task storage (natrelay.store.task_storage) holds every task, in DynamoDB or — server
mode — first in this process's memory; no rule here asks which. The clock is injectable
everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from natrelay.metrics import Metrics
from natrelay.service.abandoned import Abandoned
from natrelay.service.access import Access, Principal
from natrelay.service.agents import Agents
from natrelay.service.board import Board
from natrelay.service.catalog import Catalog
from natrelay.service.claims import Claims
from natrelay.service.context import Context
from natrelay.service.doorbell import Doorbell, LocalBells
from natrelay.service.endings import Endings
from natrelay.service.failover import Failover
from natrelay.service.history import History
from natrelay.service.keys import KeyAdmin
from natrelay.service.local_polls import LocalPolls
from natrelay.service.page_sessions import PageSessions
from natrelay.service.pools import Pools
from natrelay.service.queue import Queue
from natrelay.service.recent import RecentRequests
from natrelay.service.row_stats import RowStats
from natrelay.service.rows import RowAdmin
from natrelay.service.sessions import Registration, Sessions
from natrelay.service.sweep import Sweeper
from natrelay.service.upstream import Upstreams
from natrelay.service.usage import Usage
from natrelay.service.waiting import Waiting
from natrelay.service.wakes import Wakes
from natrelay.settings import Settings
from natrelay.store import Stores, TaskStorage
from natrelay.types import Clock
from natrelay.wakeups import Wakeups
from natrelay.wire.trace import Tracing


@dataclass(frozen=True)
class Relay:
    """Every operation of the relay, grouped by job. Raises RelayError subclasses only.
    Built by service.assembly, nowhere else."""

    ctx: Context
    access: Access
    keys: KeyAdmin
    usage: Usage
    endings: Endings
    catalog: Catalog
    pools: Pools
    sessions: Sessions
    # What a publisher still runs that nobody wants any more (heartbeats and polls say).
    abandoned: Abandoned
    polls: LocalPolls
    doorbell: Doorbell
    # The doorbell connections this process serves itself (rung when the relay has no
    # API Gateway WebSocket API).
    local_bells: LocalBells
    wakes: Wakes
    queue: Queue
    claims: Claims
    waiting: Waiting
    # A publisher that lost its claimed tasks (silent, gone): they move to its pool.
    failover: Failover
    upstreams: Upstreams
    rows: RowAdmin
    # The console: each row's hours, the overview, the charts' days, the recent requests,
    # and the sessions of its pages (its login).
    row_stats: RowStats
    board: Board
    history: History
    recent: RecentRequests
    page_sessions: PageSessions
    # Agents: the rows that serve each, its status, admins' apply.
    agents: Agents
    # Spans of this process: exported over OTLP only when configured (wire.trace).
    tracing: Tracing
    # The relay's own sweeper (in server mode it shares the tasks this process holds),
    # and how often the API process runs it (0: not here, as in Lambda mode).
    sweeper: Sweeper
    sweep_seconds: float

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def stores(self) -> Stores:
        return self.ctx.stores

    @property
    def tasks(self) -> TaskStorage:
        return self.ctx.tasks

    @property
    def clock(self) -> Clock:
        return self.ctx.clock

    @property
    def wakeups(self) -> Wakeups:
        return self.ctx.wakeups

    @property
    def metrics(self) -> Metrics:
        return self.ctx.metrics

    async def drain(self) -> None:
        """Write what this process gathered to write later (tasks on their way back to
        their pools, records of answered tasks, usage, rows' counts): it is stopping."""
        await self.polls.drain()
        await self.tasks.drain()
        await self.usage.drain()


__all__ = ["Principal", "Registration", "Relay", "Sweeper"]
