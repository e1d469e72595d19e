"""The only code that knows DynamoDB."""

from natrelay.store._dynamo import make_client
from natrelay.store.llms import DynamoLlmStore
from natrelay.store.records import Chunk, LlmRecord, NewTask, SessionRecord, StreamRead, TaskRecord
from natrelay.store.tasks import DynamoTaskStore

__all__ = [
    "Chunk",
    "DynamoLlmStore",
    "DynamoTaskStore",
    "LlmRecord",
    "NewTask",
    "SessionRecord",
    "StreamRead",
    "TaskRecord",
    "make_client",
]
