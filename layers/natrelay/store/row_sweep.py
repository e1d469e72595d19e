"""The sweep's view of the LLM rows (the sparse `bySweep` index): rows no member beat
within the timeout, and rows retired long enough to be deleted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from natrelay.store._dynamo import (
    HEARTBEAT_BEFORE,
    STATUS_IS,
    Item,
    condition,
    items,
    off_loop,
    values,
)
from natrelay.store.llms import INACTIVE, LIVE, DynamoLlmStore, mark_inactive
from natrelay.store.records import LlmRecord
from natrelay.wire import LlmStatus

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DynamoRowSweepStore:
    def __init__(self, client: DynamoDBClient, rows: DynamoLlmStore) -> None:
        self._client = client
        self._rows = rows
        self.table = rows.table

    def _key(self, name: str) -> dict[str, Any]:
        return {"name": {"S": name}}

    def _query_sweep(self, state: str, before: float) -> list[Item]:
        return list(
            items(
                self._client,
                "query",
                TableName=self.table,
                IndexName="bySweep",
                KeyConditionExpression="sweepState = :state AND sweepAt < :before",
                ExpressionAttributeValues=values(state=state, before=before),
            )
        )

    @off_loop
    def stale(self, cutoff: float) -> list[str]:
        """Names of live rows no member heartbeat reached since cutoff."""
        return [i["name"] for i in self._query_sweep(LIVE, cutoff)]

    @off_loop
    def live(self, cutoff: float) -> list[str]:
        """Names of rows some member beat since cutoff."""
        return [
            i["name"]
            for i in items(
                self._client,
                "query",
                TableName=self.table,
                IndexName="bySweep",
                KeyConditionExpression="sweepState = :state AND sweepAt >= :cutoff",
                ExpressionAttributeValues=values(state=LIVE, cutoff=cutoff),
            )
        ]

    @off_loop
    def expire_if_stale(self, name: str, cutoff: float, now: float) -> LlmRecord:
        """Mark a row inactive unless a heartbeat landed since (ConditionFailedError)."""
        return mark_inactive(
            self._client,
            self.table,
            name,
            now,
            f"sweepState = :live AND {HEARTBEAT_BEFORE}",
            live=LIVE,
            cutoff=cutoff,
        )

    @off_loop
    def retired(self, cutoff: float) -> list[str]:
        """Names of rows inactive since before cutoff."""
        return [i["name"] for i in self._query_sweep(INACTIVE, cutoff)]

    @off_loop
    def delete_if_retired(self, name: str, cutoff: float) -> None:
        """Delete the row if still inactive since before cutoff (ConditionFailedError)."""
        with condition(f"{name} came back"):
            self._client.delete_item(
                TableName=self.table,
                Key=self._key(name),
                ConditionExpression=f"{STATUS_IS} AND inactiveSince < :cutoff",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values(status=LlmStatus.INACTIVE.value, cutoff=cutoff),
            )
