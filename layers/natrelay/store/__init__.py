"""The only code that knows DynamoDB."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from natrelay.settings import Settings
from natrelay.store._dynamo import make_client
from natrelay.store.chunks import DynamoChunkStore
from natrelay.store.errors import ConditionFailedError
from natrelay.store.llms import DynamoLlmStore
from natrelay.store.records import Chunk, LlmRecord, NewTask, SessionRecord, StreamRead, TaskRecord
from natrelay.store.sessions import DynamoSessionStore
from natrelay.store.tasks import DynamoTaskStore

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@dataclass(frozen=True)
class Stores:
    """Every store of the relay, sharing one DynamoDB client."""

    client: DynamoDBClient
    llms: DynamoLlmStore
    sessions: DynamoSessionStore
    tasks: DynamoTaskStore
    chunks: DynamoChunkStore

    @classmethod
    def on(cls, client: DynamoDBClient, llms_table: str, tasks_table: str) -> Stores:
        """The stores of these tables, through this client."""
        llms = DynamoLlmStore(client, llms_table)
        return cls(
            client=client,
            llms=llms,
            sessions=DynamoSessionStore(client, tasks_table, llms),
            tasks=DynamoTaskStore(client, tasks_table),
            chunks=DynamoChunkStore(client, tasks_table),
        )

    @classmethod
    def connect(cls, settings: Settings) -> Stores:
        """The stores of the tables and DynamoDB endpoint the settings name."""
        client = make_client(settings.dynamodb_endpoint, settings.region)
        return cls.on(client, settings.llms_table, settings.tasks_table)


__all__ = [
    "Chunk",
    "ConditionFailedError",
    "DynamoChunkStore",
    "DynamoLlmStore",
    "DynamoSessionStore",
    "DynamoTaskStore",
    "LlmRecord",
    "NewTask",
    "SessionRecord",
    "Stores",
    "StreamRead",
    "TaskRecord",
]
