"""The relay's storage: the only code that knows DynamoDB, and the task storage's tiers
(store.task_storage: the durable one in DynamoDB, the memory one in front of it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from natrelay.settings import Settings
from natrelay.store._dynamo import make_client
from natrelay.store._task_items import Queued, result_hash
from natrelay.store.affinity import DynamoAffinityStore
from natrelay.store.agents import AgentWrite, DynamoAgentStore
from natrelay.store.beats import DynamoBeatStore
from natrelay.store.chunks import DynamoChunkStore
from natrelay.store.connections import Delivery, GatewayConnections
from natrelay.store.doorbells import DynamoDoorbellStore
from natrelay.store.durable_tasks import DurableTasks
from natrelay.store.errors import ChunkDiffersError, ConditionFailedError, SameResultError
from natrelay.store.idempotency import DynamoIdempotencyStore
from natrelay.store.keys import DynamoKeyStore
from natrelay.store.leases import DynamoLeaseStore
from natrelay.store.llms import DynamoLlmStore
from natrelay.store.members import DynamoMemberStore
from natrelay.store.memory_tasks import MemoryTasks
from natrelay.store.page_sessions import DynamoPageSessionStore, PageSessionRecord
from natrelay.store.queues import DynamoQueueStore
from natrelay.store.recent import DynamoRecentStore
from natrelay.store.records import (
    AgentRecord,
    Chunk,
    Holder,
    IdempotencyRecord,
    KeyRecord,
    LlmRecord,
    MemberRecord,
    NewTask,
    SessionRecord,
    StreamRead,
    TaskRecord,
    UsageRecord,
)
from natrelay.store.row_admin import ApplyConflictError, DynamoRowAdminStore, RowWrite
from natrelay.store.row_cache import RowCache
from natrelay.store.row_stats import DynamoRowStatsStore, RowHour
from natrelay.store.row_sweep import DynamoRowSweepStore
from natrelay.store.secrets import SecretMissingError, SecretReader, SecretWriteError
from natrelay.store.sessions import DynamoSessionStore, NameHeldError
from natrelay.store.task_storage import TaskStorage, queued_task
from natrelay.store.tasks import DynamoTaskStore
from natrelay.store.usage import DynamoUsageStore
from natrelay.store.whole_tasks import DynamoWholeTaskStore

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@dataclass(frozen=True)
class Stores:
    """Every store of the relay, sharing one DynamoDB client."""

    client: DynamoDBClient
    llms: DynamoLlmStore
    row_sweep: DynamoRowSweepStore
    sessions: DynamoSessionStore
    tasks: DynamoTaskStore
    queues: DynamoQueueStore
    leases: DynamoLeaseStore
    idempotency: DynamoIdempotencyStore
    chunks: DynamoChunkStore
    keys: DynamoKeyStore
    usage: DynamoUsageStore
    doorbells: DynamoDoorbellStore
    beats: DynamoBeatStore
    whole_tasks: DynamoWholeTaskStore
    members: DynamoMemberStore
    affinity: DynamoAffinityStore
    # The doorbell's WebSocket API (API Gateway), when the relay rings through one.
    connections: GatewayConnections | None = None
    # Admin writes to rows (apply), and the API keys of public rows' upstreams.
    row_admin: DynamoRowAdminStore | None = None
    secrets: SecretReader | None = None
    # Sessions of the relay's own web pages (the console).
    page_sessions: DynamoPageSessionStore | None = None
    # Agents (admins' apply) and the rows serving a backend model.
    agents: DynamoAgentStore | None = None
    # Each row's requests per hour (the console's charts).
    row_stats: DynamoRowStatsStore | None = None
    # The recent tasks of a key or row (the console's request list).
    recent: DynamoRecentStore | None = None

    @classmethod
    def on(
        cls,
        client: DynamoDBClient,
        llms_table: str,
        tasks_table: str,
        keys_table: str,
        connections: GatewayConnections | None = None,
        *,
        row_cache_seconds: float = 0,
        secrets: SecretReader | None = None,
    ) -> Stores:
        """The stores of these tables, through this client; with `row_cache_seconds`,
        rows read on the client's path are kept that long (every write of this client
        to the table empties the cache)."""
        cache = None
        if row_cache_seconds > 0:
            cache = RowCache(row_cache_seconds)
            cache.watch(client, llms_table)
        llms = DynamoLlmStore(client, llms_table, cache)
        keys = DynamoKeyStore(client, keys_table)
        agents = DynamoAgentStore(client, llms, keys, cache=cache)
        return cls(
            client=client,
            llms=llms,
            row_sweep=DynamoRowSweepStore(client, llms),
            sessions=DynamoSessionStore(client, tasks_table, llms, keys, agents),
            tasks=DynamoTaskStore(client, tasks_table),
            queues=DynamoQueueStore(client, tasks_table),
            leases=DynamoLeaseStore(client, tasks_table),
            idempotency=DynamoIdempotencyStore(client, tasks_table),
            chunks=DynamoChunkStore(client, tasks_table),
            keys=keys,
            usage=DynamoUsageStore(client, keys_table),
            doorbells=DynamoDoorbellStore(client, llms_table, tasks_table),
            beats=DynamoBeatStore(client, llms_table, tasks_table),
            whole_tasks=DynamoWholeTaskStore(client, tasks_table),
            members=DynamoMemberStore(client, llms),
            affinity=DynamoAffinityStore(client, tasks_table),
            connections=connections,
            row_admin=DynamoRowAdminStore(client, llms, keys),
            secrets=secrets or SecretReader(client.meta.region_name),
            page_sessions=DynamoPageSessionStore(client, keys_table),
            agents=agents,
            row_stats=DynamoRowStatsStore(client, keys_table),
            recent=DynamoRecentStore(client, tasks_table),
        )

    @classmethod
    def connect(
        cls,
        settings: Settings,
        on_throttle: Callable[[str], None] | None = None,
        *,
        row_cache_seconds: float = 0,
    ) -> Stores:
        """The stores of the tables and DynamoDB endpoint the settings name (rows read on
        the client's path kept `row_cache_seconds`, as `on` says)."""
        client = make_client(settings.dynamodb_endpoint, settings.region, on_throttle)
        connections = None
        if settings.doorbell_endpoint:
            connections = GatewayConnections(settings.doorbell_endpoint, settings.region)
        return cls.on(
            client,
            settings.llms_table,
            settings.tasks_table,
            settings.keys_table,
            connections,
            row_cache_seconds=row_cache_seconds,
            secrets=SecretReader(settings.region, settings.secrets_endpoint),
        )

    def durable_tasks(self) -> DurableTasks:
        """The task storage of these tables (every task in DynamoDB)."""
        return DurableTasks(self.tasks, self.chunks, self.leases, self.whole_tasks)


__all__ = [
    "AgentRecord",
    "AgentWrite",
    "ApplyConflictError",
    "Chunk",
    "ChunkDiffersError",
    "ConditionFailedError",
    "Delivery",
    "DurableTasks",
    "DynamoAgentStore",
    "DynamoBeatStore",
    "DynamoChunkStore",
    "DynamoDoorbellStore",
    "DynamoIdempotencyStore",
    "DynamoKeyStore",
    "DynamoLeaseStore",
    "DynamoLlmStore",
    "DynamoRecentStore",
    "DynamoRowAdminStore",
    "DynamoRowStatsStore",
    "DynamoSessionStore",
    "DynamoTaskStore",
    "DynamoUsageStore",
    "DynamoWholeTaskStore",
    "GatewayConnections",
    "Holder",
    "IdempotencyRecord",
    "KeyRecord",
    "LlmRecord",
    "MemberRecord",
    "MemoryTasks",
    "NameHeldError",
    "NewTask",
    "PageSessionRecord",
    "Queued",
    "RowHour",
    "RowWrite",
    "SameResultError",
    "SecretMissingError",
    "SecretReader",
    "SecretWriteError",
    "SessionRecord",
    "Stores",
    "StreamRead",
    "TaskRecord",
    "TaskStorage",
    "UsageRecord",
    "queued_task",
    "result_hash",
]
