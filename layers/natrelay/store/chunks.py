"""Stream chunks of a task in DynamoDB (sk `c#<seq>` of the task's partition)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from natrelay.store._dynamo import decode, encode, is_condition_failure, off_loop, values
from natrelay.store._task_items import seq_key, task_record
from natrelay.store.errors import ChunkDiffersError
from natrelay.store.records import Chunk, StreamRead, TaskRecord

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DynamoChunkStore:
    """Chunk batches in order; reading them returns the task's state with them."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    @off_loop
    def put_chunk(self, task_id: str, seq: int, data: bytes, expires_at: float) -> None:
        """Store chunk batch `seq`, kept until `expires_at`; the same content twice is
        harmless, other content raises ChunkDiffersError."""
        item = {"pk": f"task#{task_id}", "sk": seq_key(seq), "data": data}
        try:
            self._client.put_item(
                TableName=self._table,
                Item=encode({**item, "expiresAt": int(expires_at)}),
                ConditionExpression="attribute_not_exists(pk) OR #data = :data",
                ExpressionAttributeNames={"#data": "data"},
                ExpressionAttributeValues=values(data=data),
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            raise ChunkDiffersError(f"chunk {seq} of task {task_id} differs") from exc

    # --- reading a stream ------------------------------------------------------------

    @off_loop
    def read_stream(self, task_id: str, after_seq: int, now: float) -> StreamRead:
        """Chunks with seq > after_seq, in order, plus the task item (one Query)."""
        chunks: list[Chunk] = []
        task: TaskRecord | None = None
        page = self._client.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
            ExpressionAttributeValues=values(
                pk=f"task#{task_id}", lo=seq_key(after_seq + 1), hi="m"
            ),
            ConsistentRead=True,
        )
        for raw in page.get("Items", []):
            item = decode(raw)
            if item["sk"] == "m":
                if item.get("expiresAt", now + 1) >= now:
                    task = task_record(item)
            else:
                chunks.append(Chunk(seq=int(item["sk"][2:]), data=item["data"]))
        return StreamRead(chunks=chunks, task=task, complete="LastEvaluatedKey" not in page)
