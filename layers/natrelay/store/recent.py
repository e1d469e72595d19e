"""The recent tasks of a client key or of a row, newest first, for the console's request
list: the tasks table's `byClient` and `byLlm` indexes (keys only), then the tasks
themselves in one BatchGetItem (eventually consistent: a list, not a decision)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from natrelay.store._dynamo import decode, off_loop, values
from natrelay.store._task_items import task_key, task_record
from natrelay.store.records import TaskRecord

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# What the list shows of a task: everything but its request and result.
_SHOWN = (
    "pk", "kind", "llm", "sessionId", "state", "createdAt", "updatedAt", "leaseSeconds",
    "stream", "endpoint", "wakeId", "claimedAt", "claimedBy", "status", "error", "clientKey",
    "expiresAt", "chunkCount", "requestSize", "resultSize", "attempts", "receivedAt",
    "askedAt", "firstTokenAt", "traceparent",
)  # fmt: skip
# Every name through a placeholder: several are reserved words (state, status, stream).
_NAMES = {f"#a{i}": name for i, name in enumerate(_SHOWN)}


class DynamoRecentStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    @off_loop
    def of(self, *, key_id: str | None = None, llm: str | None = None, limit: int,
           before: float | None = None, now: float) -> list[TaskRecord]:  # fmt: skip
        """The newest `limit` tasks of a client key or of a row, created before `before`
        (a page further back), that have not expired: one index Query and one
        BatchGetItem."""
        index, attr, value = ("byClient", "clientKey", key_id) if key_id else ("byLlm", "llm", llm)
        cond = "#k = :k" + (" AND createdAt < :before" if before is not None else "")
        vals: dict[str, Any] = {"k": value}
        if before is not None:
            vals["before"] = before
        found = self._client.query(
            TableName=self._table,
            IndexName=index,
            KeyConditionExpression=cond,
            ExpressionAttributeNames={"#k": attr},
            ExpressionAttributeValues=values(**vals),
            ScanIndexForward=False,
            Limit=limit,
        )["Items"]
        ids = [decode(i)["pk"].removeprefix("task#") for i in found]
        tasks = self._many(ids)
        return [t for i in ids if (t := tasks.get(i)) is not None and not t.expired(now)]

    def _many(self, ids: list[str]) -> dict[str, TaskRecord]:
        out: dict[str, TaskRecord] = {}
        request: Any = (
            {
                self._table: {
                    "Keys": [task_key(i) for i in dict.fromkeys(ids)],
                    "ProjectionExpression": ", ".join(_NAMES),
                    "ExpressionAttributeNames": _NAMES,
                }
            }
            if ids
            else None
        )
        while request:
            answer = self._client.batch_get_item(RequestItems=request)
            for raw in answer.get("Responses", {}).get(self._table, []):
                task = task_record(decode(raw))
                out[task.id] = task
            request = answer.get("UnprocessedKeys") or None
        return out
