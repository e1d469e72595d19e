"""The relay's domain rules, one module per job; `Relay` puts them together.

sessions (register, heartbeat, deregister) · queue (submit a client's request) ·
claims (poll, chunks, results) · wakes · waiting (a client's wait and stream) ·
endings (force-finish a task and notify) · handoff (the fast path: a task handed in
memory to a poll of this process) · catalog (rows) · rows (admins' apply) · upstream
(public rows' calls) · sweep. The clock is
injectable everywhere.
"""

from __future__ import annotations

import time

from natrelay.metrics import Metrics, metrics_for
from natrelay.service.abandoned import Abandoned
from natrelay.service.access import Access, Principal
from natrelay.service.board import Board
from natrelay.service.catalog import Catalog
from natrelay.service.claims import Claims
from natrelay.service.context import Context, signals_of
from natrelay.service.doorbell import Doorbell, LocalBells
from natrelay.service.endings import Endings
from natrelay.service.handoff import Handoff
from natrelay.service.history import History
from natrelay.service.keys import KeyAdmin
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
from natrelay.signals import Signals
from natrelay.store import Stores
from natrelay.store.secrets import with_secret
from natrelay.types import Clock
from natrelay.wire.trace import Tracing


class Relay:
    """Every operation of the relay, grouped by job. Raises RelayError subclasses only."""

    def __init__(
        self,
        settings: Settings,
        stores: Stores,
        clock: Clock = time.time,
        signals: Signals | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        ctx = Context(
            settings,
            stores,
            clock,
            signals or signals_of(settings),
            metrics or metrics_for(settings.metrics),
        )
        self.metrics = ctx.metrics
        # Spans of this process: exported over OTLP only when configured (wire.trace).
        self.tracing = Tracing("natrelay-relay", export=settings.tracing == "otlp")
        self.ctx = ctx
        self.settings = settings
        self.stores = stores
        self.clock = clock
        self.signals = ctx.signals
        self.access = Access(ctx)
        self.keys = KeyAdmin(ctx, self.access)
        # Each row's requests per hour: batched in one long-lived process.
        self.row_stats = RowStats(ctx, batching=settings.in_process_signals)
        self.usage = Usage(ctx, self.row_stats)
        self.handoff = Handoff(ctx)
        self.endings = Endings(ctx, self.usage, self.handoff)
        self.abandoned = Abandoned(ctx, self.handoff)
        self.catalog = Catalog(ctx)
        self.pools = Pools(ctx, self.endings)
        self.sessions = Sessions(ctx, self.endings, self.pools)
        # Rings go through API Gateway when the relay has one, else to this process's.
        self.local_bells = LocalBells()
        self.doorbell = Doorbell(ctx, stores.connections or self.local_bells)
        self.wakes = Wakes(ctx, self.sessions, self.doorbell)
        self.queue = Queue(
            ctx, self.catalog, self.wakes, self.usage, doorbell=self.doorbell, pools=self.pools
        )
        self.claims = Claims(ctx, self.sessions, self.wakes, self.endings, self.usage)
        self.waiting = Waiting(ctx, self.endings)
        # Public rows: the relay calls their upstreams; admins apply rows.
        self.upstreams = Upstreams(ctx, self.usage)
        self.rows = RowAdmin(ctx, self.upstreams.read_key)
        # The console: the overview, the charts' history, the recent requests.
        self.board = Board(ctx, self.row_stats)
        self.history = History(ctx, self.usage, self.row_stats)
        self.recent = RecentRequests(ctx)
        self.page_sessions = PageSessions(ctx, self.access)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Relay:
        settings = with_secret(settings or Settings())
        metrics = metrics_for(settings.metrics)
        stores = Stores.connect(settings, on_throttle=metrics.dynamodb_throttle)
        return cls(settings, stores, metrics=metrics)

    async def drain(self) -> None:
        """Write what this process gathered to write later (records of answered tasks,
        usage, rows' counts): it is stopping."""
        await self.handoff.drain()
        await self.usage.drain()

    def sweeper(self) -> Sweeper:
        """A sweeper sharing this relay's stores, clock, in-process signals and metrics."""
        return Sweeper(
            self.stores,
            self.settings,
            self.clock,
            self.signals,
            self.metrics,
            bells=self.local_bells,
            handoff=self.handoff,
        )


__all__ = ["Principal", "Registration", "Relay", "Sweeper"]
