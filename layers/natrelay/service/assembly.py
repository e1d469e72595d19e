"""The one composition root: every part of a relay, built from settings.

The API app (natrelay.web, functions/api), the doorbell's handler (web.doorbell,
functions/doorbell), the sweeper (functions/sweeper, through `SweepRunner`) and
`natrelay dev` all build their parts here, and only here is the deployment mode read:

* `lambda`: one request per process at a time. Tasks live in DynamoDB only, nothing
  wakes a waiter in-process (waiters re-read DynamoDB), every write is made at once.
* `server`: one long-lived process. In-process wake-ups; with the fast path on, the
  memory tier of the task storage and the polls this process holds (the fast path);
  usage and rows' counts batched behind the answers; rows read on the client's path
  cached briefly; and, with `sweep_interval_seconds`, the sweep run in the process.
"""

from __future__ import annotations

import asyncio
import time
from functools import cached_property

from natrelay.metrics import Metrics, metrics_for
from natrelay.observe import configure_logging
from natrelay.service import Relay
from natrelay.service.abandoned import Abandoned
from natrelay.service.access import Access
from natrelay.service.affinity import Affinity
from natrelay.service.agents import Agents
from natrelay.service.board import Board
from natrelay.service.catalog import Catalog
from natrelay.service.claims import Claims
from natrelay.service.context import Context
from natrelay.service.doorbell import Doorbell, LocalBells
from natrelay.service.empty_queues import EmptyQueues
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
from natrelay.service.sessions import Sessions
from natrelay.service.speeds import Speeds
from natrelay.service.sweep import Sweeper
from natrelay.service.upstream import Upstreams
from natrelay.service.usage import Usage
from natrelay.service.waiting import Waiting
from natrelay.service.wakes import Wakes
from natrelay.settings import Settings
from natrelay.store import MemoryTasks, Stores, TaskStorage
from natrelay.store.secrets import with_secret
from natrelay.types import Clock
from natrelay.wakeups import Wakeups
from natrelay.wire.trace import Tracing


class Assembly:
    """The parts of one relay process, each built once, when first asked for: the
    sweeper's process builds no more than the sweep needs."""

    def __init__(
        self,
        settings: Settings,
        *,
        stores: Stores | None = None,
        clock: Clock = time.time,
        metrics: Metrics | None = None,
        process: str = "relay",
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = metrics or metrics_for(settings.metrics, process)
        self.server = settings.mode == "server"
        self.fast_path = self.server and settings.fast_path
        # Only one long-lived process sees (nearly) every write to the rows it caches.
        cache = settings.row_cache_seconds if self.server else 0
        self.stores = stores or Stores.connect(
            settings, on_throttle=self.metrics.dynamodb_throttle, row_cache_seconds=cache
        )
        self.sweep_seconds = settings.sweep_interval_seconds if self.server else 0.0

    @classmethod
    def start(
        cls, settings: Settings | None = None, *, process: str = "relay", authenticates: bool = True
    ) -> Assembly:
        """The parts of a process of its own, on the tables the settings name: its
        logging configured, its metrics named for `process`, and (if it `authenticates`
        callers) the tokens of the settings' secret read."""
        settings = settings or Settings()
        configure_logging(settings.log_format, settings.log_level)
        if authenticates:
            settings = with_secret(settings)
        return cls(settings, process=process)

    # --- what every part shares ------------------------------------------------------

    @cached_property
    def tasks(self) -> TaskStorage:
        """Tasks in DynamoDB; with the fast path, held first in this process's memory."""
        durable = self.stores.durable_tasks()
        if not self.fast_path:
            return durable
        batch = self.settings.record_batch_seconds
        return MemoryTasks(durable, self.stores.whole_tasks, self.clock, batch)

    @cached_property
    def ctx(self) -> Context:
        s = self.settings
        wakeups = Wakeups(self.server, s.signal_buffer_hints, s.signal_buffer_bytes)
        return Context(s, self.stores, self.tasks, self.clock, wakeups, self.metrics)

    @cached_property
    def row_stats(self) -> RowStats:
        # each row's hours (the console's): batched in server mode
        return RowStats(self.ctx, batching=self.server)

    @cached_property
    def usage(self) -> Usage:
        return Usage(self.ctx, self.row_stats, batching=self.server)

    @cached_property
    def endings(self) -> Endings:
        return Endings(self.ctx, self.usage)

    @cached_property
    def local_bells(self) -> LocalBells:
        return LocalBells()

    @cached_property
    def doorbell(self) -> Doorbell:
        # rings go through API Gateway when the relay has one, else to this process's
        return Doorbell(self.ctx, self.stores.connections or self.local_bells)

    @cached_property
    def failover(self) -> Failover:
        return Failover(self.ctx, self.endings, self.doorbell)

    @cached_property
    def sweeper(self) -> Sweeper:
        return Sweeper(self.ctx, self.usage, self.endings, self.doorbell, self.failover)

    # --- the relay -----------------------------------------------------------------------

    @cached_property
    def speeds(self) -> Speeds:
        return Speeds(self.clock, enabled=self.settings.dispatch_by_speed)

    @cached_property
    def polls(self) -> LocalPolls:
        return LocalPolls(self.ctx, self.endings, self.speeds, enabled=self.fast_path)

    @cached_property
    def pools(self) -> Pools:
        return Pools(self.ctx, self.endings)

    @cached_property
    def sessions(self) -> Sessions:
        return Sessions(self.ctx, self.endings, self.pools, self.polls)

    @cached_property
    def wakes(self) -> Wakes:
        return Wakes(self.ctx, self.sessions, self.doorbell)

    @cached_property
    def affinity(self) -> Affinity:
        # one long-lived process sees every claim of its pools; Lambda reads the index
        return Affinity(self.ctx, self.speeds, in_memory=self.server)

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.ctx, self.affinity, self.speeds)

    @cached_property
    def agents(self) -> Agents:
        return Agents(self.ctx, self.catalog)

    @cached_property
    def access(self) -> Access:
        return Access(self.ctx)

    @cached_property
    def upstreams(self) -> Upstreams:
        return Upstreams(self.ctx, self.usage)

    @cached_property
    def empty(self) -> EmptyQueues:
        # alone on its tables (the fast path on says so) and sweeping them itself: a
        # poll hears of every task queued for its pools (service.empty_queues)
        return EmptyQueues(self.ctx, alone=self.fast_path and self.sweep_seconds > 0)

    @cached_property
    def relay(self) -> Relay:
        ctx = self.ctx
        return Relay(
            ctx=ctx,
            access=self.access,
            keys=KeyAdmin(ctx, self.access),
            usage=self.usage,
            endings=self.endings,
            catalog=self.catalog,
            pools=self.pools,
            sessions=self.sessions,
            abandoned=Abandoned(ctx),
            polls=self.polls,
            doorbell=self.doorbell,
            local_bells=self.local_bells,
            wakes=self.wakes,
            queue=Queue(
                ctx,
                self.catalog,
                self.wakes,
                self.usage,
                doorbell=self.doorbell,
                pools=self.pools,
                polls=self.polls,
                endings=self.endings,
                affinity=self.affinity,
                empty=self.empty,
            ),
            claims=Claims(
                ctx,
                self.sessions,
                self.wakes,
                self.endings,
                polls=self.polls,
                empty=self.empty,
                failover=self.failover,
                affinity=self.affinity,
                speeds=self.speeds,
            ),
            waiting=Waiting(ctx, self.endings, self.failover),
            failover=self.failover,
            upstreams=self.upstreams,
            rows=RowAdmin(ctx, self.upstreams.read_key),
            row_stats=self.row_stats,
            board=Board(ctx, self.row_stats, self.agents),
            history=History(ctx, self.usage, self.row_stats),
            recent=RecentRequests(ctx),
            agents=self.agents,
            page_sessions=PageSessions(ctx, self.access),
            tracing=Tracing("natrelay-relay", export=self.settings.tracing == "otlp"),
            sweeper=self.sweeper,
            sweep_seconds=self.sweep_seconds,
        )


def build_relay(
    settings: Settings | None = None, stores: Stores | None = None, *, clock: Clock = time.time
) -> Relay:
    """The relay the settings describe: on `stores` (and `clock`) when given, else as a
    process of its own on the tables the settings name (`Assembly.start`)."""
    if stores is None:
        return Assembly.start(settings).relay
    return Assembly(settings or Settings(), stores=stores, clock=clock).relay


class SweepRunner:
    """Runs sweeps where the sweeper is a process of its own (the scheduled Lambda
    function), its parts built once per cold start."""

    def __init__(self, settings: Settings | None = None) -> None:
        # the sweeper authenticates nobody: no secret to read
        parts = Assembly.start(settings, process="sweeper", authenticates=False)
        self.sweeper = parts.sweeper
        self._loop = asyncio.new_event_loop()

    def __call__(self) -> dict[str, int]:
        """One sweep; returns what it did, by kind."""
        try:
            return self._loop.run_until_complete(self.sweeper.run())
        finally:
            self.sweeper.metrics.flush()

    def close(self) -> None:
        self._loop.close()
