"""Conversations and the members that ran them (the `byAffinity` index of the tasks
table): a task with an affinity is listed once claimed, with its claimer, and leaves
the index with its task."""

from __future__ import annotations

from typing import TYPE_CHECKING

from natrelay.store._dynamo import decode, off_loop, values

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DynamoAffinityStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    @off_loop
    def last_claimer(self, affinity: str, since: float, now: float) -> str | None:
        """The session that claimed the latest task of the conversation since `since`
        (one Query of one item; None: none did, or that task has expired)."""
        page = self._client.query(
            TableName=self._table,
            IndexName="byAffinity",
            KeyConditionExpression="affinity = :a AND claimedAt > :since",
            ExpressionAttributeValues=values(a=affinity, since=since),
            ScanIndexForward=False,
            Limit=1,
        )
        for raw in page.get("Items", []):
            item = decode(raw)
            if item.get("expiresAt", now + 1) >= now:
                claimer: str | None = item.get("claimedBy")
                return claimer
        return None
