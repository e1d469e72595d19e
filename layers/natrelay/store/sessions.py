"""Publisher sessions in DynamoDB: one item per session in the tasks table
(pk `session#<id>`, sk `m`) holding its names, their statuses, its heartbeat and
generation, so a heartbeat needs no index read."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from natrelay.store._dynamo import Item, condition, decode, off_loop, values
from natrelay.store.errors import ConditionFailedError
from natrelay.store.llms import DynamoLlmStore, row_record
from natrelay.store.records import LlmRecord, SessionRecord
from natrelay.wire import LlmStatus, ProviderSpec

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_EXISTS = "attribute_exists(pk)"


def session_record(item: Item) -> SessionRecord:
    return SessionRecord(
        id=item["pk"].removeprefix("session#"),
        names=tuple(sorted(item.get("names") or ())),
        statuses={k: LlmStatus(v) for k, v in (item.get("statuses") or {}).items()},
        heartbeat_at=item.get("heartbeatAt", 0.0),
        generation=int(item.get("generation", 0)),
    )


class DynamoSessionStore:
    """Sessions: register (with their rows, atomically), read, touch, delete."""

    def __init__(self, client: DynamoDBClient, table: str, rows: DynamoLlmStore) -> None:
        self._client = client
        self.table = table
        self._rows = rows

    def _key(self, session_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"session#{session_id}"}, "sk": {"S": "m"}}

    @off_loop
    def register(
        self,
        session_id: str,
        specs: list[ProviderSpec],
        now: float,
        cutoff: float,
        expires_at: float,
    ) -> tuple[SessionRecord, list[LlmRecord]]:
        """Create or take over the rows and write the session, all or nothing.

        A row held by another live session fails the whole registration with
        ConditionFailedError whose `record` is that row.
        """
        ops: list[dict[str, Any]] = []
        rows: list[Item] = []
        for spec in specs:
            op, row = self._rows.takeover_op(spec, session_id, now, cutoff)
            ops.append(op)
            rows.append(row)
        ops.append(
            {
                "Update": {
                    "TableName": self.table,
                    "Key": self._key(session_id),
                    "UpdateExpression": "SET #names = :names, statuses = :statuses, "
                    "heartbeatAt = :now, expiresAt = :exp ADD generation :one",
                    "ExpressionAttributeNames": {"#names": "names"},
                    "ExpressionAttributeValues": values(
                        names={s.name for s in specs},
                        statuses={s.name: s.initial_status.value for s in specs},
                        now=now,
                        exp=int(expires_at),
                        one=1,
                    ),
                }
            }
        )
        try:
            self._client.transact_write_items(TransactItems=ops)  # type: ignore[arg-type]
        except ClientError as exc:
            reasons = exc.response.get("CancellationReasons", [])
            for spec, reason in zip(specs, reasons, strict=False):
                if reason.get("Code") == "ConditionalCheckFailed":
                    held = reason.get("Item")
                    raise ConditionFailedError(
                        f"row {spec.name} is held",
                        record=row_record(decode(held)) if held else None,
                    ) from exc
            raise
        session = self._get(session_id)
        assert session is not None  # just written
        return session, [row_record(r) for r in rows]

    def _get(self, session_id: str) -> SessionRecord | None:
        raw = self._client.get_item(
            TableName=self.table, Key=self._key(session_id), ConsistentRead=True
        ).get("Item")
        return session_record(decode(raw)) if raw else None

    @off_loop
    def get(self, session_id: str) -> SessionRecord | None:
        return self._get(session_id)

    @off_loop
    def touch(
        self, session_id: str, statuses: dict[str, LlmStatus], now: float, expires_at: float
    ) -> None:
        """Record a heartbeat and the statuses; ConditionFailedError if the session is gone."""
        with condition(f"session {session_id} is gone"):
            self._client.update_item(
                TableName=self.table,
                Key=self._key(session_id),
                UpdateExpression="SET heartbeatAt = :now, statuses = :statuses, expiresAt = :exp",
                ConditionExpression=_EXISTS,
                ExpressionAttributeValues=values(
                    now=now,
                    statuses={k: v.value for k, v in statuses.items()},
                    exp=int(expires_at),
                ),
            )

    @off_loop
    def record_status(self, session_id: str, name: str, status: LlmStatus) -> None:
        """Record on the session item (not the row) a status the publisher established,
        e.g. after a wake; ConditionFailedError if the session is gone."""
        with condition(f"session {session_id} is gone"):
            self._client.update_item(
                TableName=self.table,
                Key=self._key(session_id),
                UpdateExpression="SET statuses.#n = :status",
                ConditionExpression=_EXISTS,
                ExpressionAttributeNames={"#n": name},
                ExpressionAttributeValues=values(status=status.value),
            )

    @off_loop
    def delete(self, session_id: str) -> None:
        self._client.delete_item(TableName=self.table, Key=self._key(session_id))
