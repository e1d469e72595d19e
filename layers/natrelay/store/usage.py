"""Usage and limits per key and UTC day in DynamoDB (table `keys`).

pk `usage#<key id>`, sk `<YYYY-MM-DD>`: counters of the day (`requests`,
`promptTokens`, `completionTokens`, their sum `tokens`, `errors`, and `refused`: requests
its limits turned away), one counter per
minute (`m<HHMM>`, for requests per minute) and the string set `inflight` of requests holding a
concurrency slot (`<request id>@<deadline>`). One conditional write admits a request
against every limit at once (keys with limits only); one write at its end counts it
and what it used. (Each row's requests per hour: store.row_stats.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from natrelay.store._dynamo import Item, condition, items, off_loop, values
from natrelay.store.records import UsageRecord

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Usage is kept this long (DynamoDB TTL on AWS).
KEEP_SECONDS = 400 * 86400


def usage_record(item: Item) -> UsageRecord:
    return UsageRecord(
        key_id=item["pk"].removeprefix("usage#"),
        day=item["sk"],
        requests=int(item.get("requests", 0)),
        prompt_tokens=int(item.get("promptTokens", 0)),
        completion_tokens=int(item.get("completionTokens", 0)),
        errors=int(item.get("errors", 0)),
        tokens=int(item.get("tokens", 0)),
        refused=int(item.get("refused", 0)),
        inflight=frozenset(item.get("inflight") or ()),
        minutes={k[1:]: int(v) for k, v in item.items() if k.startswith("m") and k[1:].isdigit()},
    )


class DynamoUsageStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self.table = table

    def _key(self, key_id: str, day: str) -> dict[str, Any]:
        return {"pk": {"S": f"usage#{key_id}"}, "sk": {"S": day}}

    @off_loop
    def admit(
        self,
        key_id: str,
        day: str,
        minute: str,
        *,
        slot: str | None,
        rpm: int | None,
        concurrency: int | None,
        tokens_per_day: int | None,
        expires_at: float,
        reserve: int = 0,
    ) -> None:
        """Count a request in its minute (take a concurrency slot, reserve `reserve`
        tokens of the budget) if every limit allows it. ConditionFailedError's `record`
        is the day's usage as it was."""
        adds = ["#minute :one"]
        conds: list[str] = []
        vals: dict[str, Any] = {"one": 1, "exp": int(expires_at)}
        if rpm is not None:
            conds.append("(attribute_not_exists(#minute) OR #minute < :rpm)")
            vals["rpm"] = rpm
        if tokens_per_day is not None:
            conds.append("(attribute_not_exists(tokens) OR tokens < :budget)")
            vals["budget"] = tokens_per_day
            if reserve:
                adds.append("tokens :reserve")
                vals["reserve"] = reserve
        if concurrency is not None and slot is not None:
            adds.append("inflight :slot")
            conds.append("(attribute_not_exists(inflight) OR size(inflight) < :concurrency)")
            vals["slot"] = {slot}
            vals["concurrency"] = concurrency
        with condition(f"usage of {key_id} over a limit", usage_record):
            self._client.update_item(
                TableName=self.table,
                Key=self._key(key_id, day),
                UpdateExpression=f"ADD {', '.join(adds)} SET expiresAt = :exp",
                ConditionExpression=" AND ".join(conds)
                or "attribute_exists(pk) OR attribute_not_exists(pk)",
                ExpressionAttributeNames={"#minute": f"m{minute}"},
                ExpressionAttributeValues=values(**vals),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )

    @off_loop
    def record(
        self,
        key_id: str,
        day: str,
        *,
        slot: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        errors: int,
        expires_at: float,
        requests: int = 1,
        reserved: int = 0,
        refused: int = 0,
    ) -> None:
        """Count requests that ended (one, or several added up), what they used, and
        free the slot (of one) and the tokens it `reserved`; and requests the key's limits
        refused."""
        adds = ["requests :n", "promptTokens :p", "completionTokens :c", "tokens :t", "errors :e"]
        vals: dict[str, Any] = {
            "p": prompt_tokens,
            "c": completion_tokens,
            "t": prompt_tokens + completion_tokens - reserved,
            "e": errors,
            "n": requests,
            "exp": int(expires_at),
        }
        if refused:
            adds.append("refused :f")
            vals["f"] = refused
        update = f"ADD {', '.join(adds)} SET expiresAt = :exp"
        if slot is not None:
            update += " DELETE inflight :slot"
            vals["slot"] = {slot}
        self._client.update_item(
            TableName=self.table,
            Key=self._key(key_id, day),
            UpdateExpression=update,
            ExpressionAttributeValues=values(**vals),
        )

    @off_loop
    def free_slots(self, key_id: str, day: str, slots: set[str], reserved: int = 0) -> None:
        """Drop concurrency slots whose requests are long gone (or never ran), and give
        back the tokens such a request `reserved`."""
        parts: list[str] = []
        vals: dict[str, Any] = {}
        if slots:
            parts.append("DELETE inflight :slots")
            vals["slots"] = slots
        if reserved:
            parts.append("ADD tokens :back")
            vals["back"] = -reserved
        if parts:
            self._client.update_item(
                TableName=self.table,
                Key=self._key(key_id, day),
                UpdateExpression=" ".join(parts),
                ExpressionAttributeValues=values(**vals),
            )

    @off_loop
    def days(self, key_id: str, since: str) -> list[UsageRecord]:
        """The key's usage per day from `since` (YYYY-MM-DD) on, oldest first."""
        found = items(
            self._client,
            "query",
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND sk >= :since",
            ExpressionAttributeValues=values(pk=f"usage#{key_id}", since=since),
            ConsistentRead=True,
        )
        return [usage_record(i) for i in found]
