"""The pools' queues (the `byPool` index of the tasks table): tasks waiting for an
LLM's pool, wakes first, then in queue order (class and age: service.dispatch). The
index lags the table: a claim (a conditional write on the task) always decides."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from natrelay.store._dynamo import decode, items, off_loop, values
from natrelay.store._task_items import Queued, pool_queue, queued_entry
from natrelay.wire import TaskKind

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DynamoQueueStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    def _queue_page(self, llm: str, **kwargs: Any) -> Any:
        return self._client.query(
            TableName=self._table,
            IndexName="byPool",
            KeyConditionExpression="#queue = :pool",
            ExpressionAttributeNames={"#queue": "queue"},
            ExpressionAttributeValues=values(pool=pool_queue(llm)),
            **kwargs,
        )

    @off_loop
    def queued(self, llm: str) -> list[str]:
        """Ids of every task waiting in the pool's queue, through every page."""
        found = items(
            self._client,
            "query",
            TableName=self._table,
            IndexName="byPool",
            KeyConditionExpression="#queue = :pool",
            ExpressionAttributeNames={"#queue": "queue"},
            ExpressionAttributeValues=values(pool=pool_queue(llm)),
        )
        return [item["pk"].removeprefix("task#") for item in found]

    @off_loop
    def pending(self, llm: str, limit: int) -> list[Queued]:
        """Tasks waiting in the pool's queue, wakes first, then in queue order (the index
        may lag: the claim decides)."""
        page = self._queue_page(llm, Limit=limit)
        return [queued_entry(decode(raw)) for raw in page.get("Items", [])]

    @off_loop
    def depth(self, llm: str, at_most: int) -> tuple[int, float | None]:
        """How many tasks wait in the pool's queue (counting to `at_most` + 1 at most),
        and when the oldest infer task among them was queued."""
        entries = self._entries(llm, at_most)
        infers = [e.queued_at for e in entries if e.kind is TaskKind.INFER]
        return len(entries), (min(infers) if infers else None)

    @off_loop
    def entries(self, llm: str, at_most: int) -> list[Queued]:
        """The first `at_most` + 1 tasks of the pool's queue, in its order."""
        return self._entries(llm, at_most)

    def _entries(self, llm: str, at_most: int) -> list[Queued]:
        page = self._queue_page(llm, Limit=at_most + 1)
        return [queued_entry(decode(raw)) for raw in page.get("Items", [])]

    @off_loop
    def position(self, llm: str, order: float) -> int:
        """How many tasks of the pool's queue are ahead of one queued at `order`."""
        count = 0
        pages = self._client.get_paginator("query").paginate(
            TableName=self._table,
            IndexName="byPool",
            KeyConditionExpression="#queue = :pool AND queueOrder < :order",
            ExpressionAttributeNames={"#queue": "queue"},
            ExpressionAttributeValues=values(pool=pool_queue(llm), order=order),
            Select="COUNT",
        )
        for page in pages:
            count += int(page.get("Count", 0))
        return count
