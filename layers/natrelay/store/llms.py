"""LLM rows in DynamoDB (table `llms`, key `name`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from natrelay.store._dynamo import (
    HEARTBEAT_BEFORE,
    SESSION_IS,
    STATUS_IS,
    WAKE_FREE,
    WAKE_IS,
    Item,
    condition,
    decode,
    items,
    off_loop,
    values,
)
from natrelay.store.errors import ConditionFailedError
from natrelay.store.records import VIRTUAL, LlmRecord
from natrelay.wire import LlmStatus, ProviderSpec

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

LIVE = "live"
INACTIVE = "inactive"
_NAMES = {"#name": "name", "#status": "status"}
# A row may be taken by a registration of its owner (or of anyone, for a row without
# one) when it is new, the session's own, or its holder is gone.
_TAKEOVER = (
    "attribute_not_exists(#name) OR ((attribute_not_exists(#owner) OR #owner = :owner) AND "
    f"({SESSION_IS} OR #status = :inactive OR {HEARTBEAT_BEFORE}))"
)


def row_record(item: Item) -> LlmRecord:
    return LlmRecord(
        name=item["name"],
        kind=item.get("kind", VIRTUAL),
        type=item.get("type", ""),
        model=item.get("model", ""),
        tier=item.get("tier"),
        description=item.get("description"),
        extra_config=item.get("extraConfig") or {},
        status=LlmStatus(item["status"]),
        session_id=item.get("sessionId"),
        owner=item.get("owner"),
        last_heartbeat_at=item.get("lastHeartbeatAt"),
        inactive_since=item.get("inactiveSince"),
        created_at=item.get("createdAt"),
        wake_max_wait=item.get("wakeMaxWait"),
        wake_id=item.get("wakeId"),
        wake_deadline=item.get("wakeDeadline"),
        doorbell=item.get("doorbell"),
    )


class DynamoLlmStore:
    """LLM rows: what is published, by whom, its status and its wake marker.

    Conditional writes raise ConditionFailedError; where the docstring says so, its
    `record` is the row as it was.
    """

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self.table = table

    def _key(self, name: str) -> dict[str, Any]:
        return {"name": {"S": name}}

    @off_loop
    def get(self, name: str) -> LlmRecord | None:
        raw = self._client.get_item(
            TableName=self.table, Key=self._key(name), ConsistentRead=True
        ).get("Item")
        return row_record(decode(raw)) if raw else None

    @off_loop
    def all(self) -> list[LlmRecord]:
        rows = items(self._client, "scan", TableName=self.table, ConsistentRead=True)
        return sorted((row_record(row) for row in rows), key=lambda r: r.name)

    @off_loop
    def delete(self, name: str) -> bool:
        """Delete the row; False if there was none."""
        old = self._client.delete_item(
            TableName=self.table, Key=self._key(name), ReturnValues="ALL_OLD"
        ).get("Attributes")
        return old is not None

    # --- registration ----------------------------------------------------------------

    def takeover_op(
        self, spec: ProviderSpec, session_id: str, owner: str, now: float, cutoff: float
    ) -> tuple[dict[str, Any], Item]:
        """The transaction item that creates or takes over the row of `spec` for the
        session (for DynamoSessionStore.register), and the row it writes."""
        row: Item = {
            "kind": VIRTUAL,
            "type": spec.type,
            "model": spec.model,
            "tier": spec.tier,
            "description": spec.description,
            "extraConfig": spec.extra_config or None,
            "status": spec.initial_status.value,
            "sessionId": session_id,
            "owner": owner,
            "lastHeartbeatAt": now,
            "wakeMaxWait": spec.wake_max_wait_seconds,
            "sweepState": LIVE,
            "sweepAt": now,
        }
        present = {k: v for k, v in row.items() if v is not None}
        absent = [k for k, v in row.items() if v is None]
        names = {f"#{k}": k for k in present} | _NAMES | {"#owner": "owner"}
        sets = [f"#{k} = :{k}" for k in present] + ["createdAt = if_not_exists(createdAt, :now)"]
        # a row taken back keeps when it was first published; stale state goes
        drop = [*absent, "inactiveSince", "wakeId", "wakeDeadline", "doorbell"]
        op = {
            "Update": {
                "TableName": self.table,
                "Key": self._key(spec.name),
                "UpdateExpression": f"SET {', '.join(sets)} REMOVE {', '.join(drop)}",
                "ConditionExpression": _TAKEOVER,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values(
                    **present,
                    now=now,
                    sid=session_id,
                    inactive=LlmStatus.INACTIVE.value,
                    cutoff=cutoff,
                ),
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }
        return op, {"name": spec.name, "createdAt": now, **present}

    # --- a session's rows ------------------------------------------------------------

    @off_loop
    def beat(self, name: str, session_id: str, status: LlmStatus, now: float) -> LlmRecord:
        """Refresh the row's heartbeat and status; ConditionFailedError if the session
        no longer holds it."""
        with condition(f"row {name} is no longer held by session {session_id}"):
            raw = self._client.update_item(
                TableName=self.table,
                Key=self._key(name),
                UpdateExpression="SET lastHeartbeatAt = :now, sweepState = :live, "
                "sweepAt = :now, #status = :status REMOVE inactiveSince",
                ConditionExpression=SESSION_IS,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values(
                    now=now, live=LIVE, status=status.value, sid=session_id
                ),
                ReturnValues="ALL_NEW",
            )["Attributes"]
        return row_record(decode(raw))

    @off_loop
    def retire(self, name: str, session_id: str, now: float) -> LlmRecord:
        """Mark the row inactive if the session still holds it (ConditionFailedError)."""
        return self._mark_inactive(name, now, SESSION_IS, sid=session_id)

    # --- wake markers ----------------------------------------------------------------

    @off_loop
    def claim_wake(self, name: str, wake_id: str, deadline: float, now: float) -> LlmRecord:
        """Set the wake marker if the row is hibernating and no live marker exists.

        ConditionFailedError's `record` is the row as it was (the wake to wait for), or
        None if there is no row.
        """
        with condition(f"wake of {name} already claimed", row_record):
            raw = self._client.update_item(
                TableName=self.table,
                Key=self._key(name),
                UpdateExpression="SET wakeId = :wake, wakeDeadline = :deadline",
                ConditionExpression=f"{STATUS_IS} AND {WAKE_FREE}",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values(
                    status=LlmStatus.HIBERNATING.value, wake=wake_id, deadline=deadline, now=now
                ),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )["Attributes"]
        return row_record(decode(raw))

    @off_loop
    def clear_wake(self, name: str, wake_id: str, *, activate: bool) -> bool:
        """Remove the marker of this wake (and make the row active if `activate`).

        False if the marker is another wake's or gone: a stale wake changes nothing.
        """
        update = "SET #status = #status REMOVE wakeId, wakeDeadline"
        vals: dict[str, Any] = {"wake": wake_id}
        if activate:
            update = "SET #status = :active REMOVE wakeId, wakeDeadline"
            vals["active"] = LlmStatus.ACTIVE.value
        try:
            with condition("stale wake"):
                self._client.update_item(
                    TableName=self.table,
                    Key=self._key(name),
                    UpdateExpression=update,
                    ConditionExpression=WAKE_IS,
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues=values(**vals),
                )
        except ConditionFailedError:
            return False
        return True

    # --- sweep -----------------------------------------------------------------------

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
    def stale(self, cutoff: float) -> list[tuple[str, str | None]]:
        """(name, sessionId) of live rows whose heartbeat is older than cutoff."""
        return [(i["name"], i.get("sessionId")) for i in self._query_sweep(LIVE, cutoff)]

    @off_loop
    def live_sessions(self, cutoff: float) -> set[str]:
        """Sessions holding a live row whose heartbeat is not older than cutoff."""
        found = items(
            self._client,
            "query",
            TableName=self.table,
            IndexName="bySweep",
            KeyConditionExpression="sweepState = :state AND sweepAt >= :cutoff",
            ExpressionAttributeValues=values(state=LIVE, cutoff=cutoff),
        )
        return {i["sessionId"] for i in found if i.get("sessionId")}

    @off_loop
    def expire_if_stale(self, name: str, cutoff: float, now: float) -> LlmRecord:
        """Mark a row inactive unless a heartbeat landed since (ConditionFailedError)."""
        return self._mark_inactive(
            name, now, f"sweepState = :live AND {HEARTBEAT_BEFORE}", live=LIVE, cutoff=cutoff
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

    def _mark_inactive(self, name: str, now: float, cond: str, **vals: Any) -> LlmRecord:
        with condition(f"{name} changed meanwhile"):
            raw = self._client.update_item(
                TableName=self.table,
                Key=self._key(name),
                UpdateExpression="SET #status = :inactive, inactiveSince = :now, "
                "sweepState = :inactive, sweepAt = :now REMOVE wakeId, wakeDeadline",
                ConditionExpression=f"attribute_exists(#name) AND {cond}",
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues=values(
                    inactive=LlmStatus.INACTIVE.value, now=now, **vals
                ),
                ReturnValues="ALL_NEW",
            )["Attributes"]
        return row_record(decode(raw))
