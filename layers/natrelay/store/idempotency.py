"""Idempotency records in the tasks table: pk `idem#<client key>#<key hash>`, sk `m`,
naming the task a client key's Idempotency-Key started. Written in one transaction with
that task (DynamoTaskStore.put), so a key starts one task across every instance."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from natrelay.store._dynamo import Item, decode, encode, off_loop, values
from natrelay.store.records import IdempotencyRecord

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Free for a new task: no record, an expired one, or one whose task the caller found gone.
_FREE = "attribute_not_exists(pk) OR expiresAt < :now OR taskId = :stale"


def _pk(client_key: str, key_hash: str) -> str:
    return f"idem#{client_key}#{key_hash}"


def idempotency_record(item: Item) -> IdempotencyRecord:
    client_key, _, key_hash = item["pk"].removeprefix("idem#").rpartition("#")
    return IdempotencyRecord(
        client_key=client_key,
        key_hash=key_hash,
        task_id=item["taskId"],
        request_hash=item.get("requestHash", ""),
        expires_at=item.get("expiresAt", 0),
    )


def claim_op(
    table: str, record: IdempotencyRecord, now: float, stale: str | None
) -> dict[str, Any]:
    """The transaction item that makes `record` the key's, unless another live one is."""
    item = {
        "pk": _pk(record.client_key, record.key_hash),
        "sk": "m",
        "taskId": record.task_id,
        "requestHash": record.request_hash,
        "expiresAt": int(record.expires_at),
    }
    return {
        "Put": {
            "TableName": table,
            "Item": encode(item),
            "ConditionExpression": _FREE,
            "ExpressionAttributeValues": values(now=now, stale=stale or "-"),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }


class DynamoIdempotencyStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    @off_loop
    def get(self, client_key: str, key_hash: str, now: float) -> IdempotencyRecord | None:
        """The live record of this key of this client, if any."""
        raw = self._client.get_item(
            TableName=self._table,
            Key={"pk": {"S": _pk(client_key, key_hash)}, "sk": {"S": "m"}},
            ConsistentRead=True,
        ).get("Item")
        if not raw:
            return None
        record = idempotency_record(decode(raw))
        return record if record.expires_at >= now else None
