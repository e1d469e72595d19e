"""LLM rows and publisher sessions in DynamoDB."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from natrelay.errors import ConditionFailedError, NameTakenError, SessionNotFoundError
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
    values,
)
from natrelay.store.records import VIRTUAL, LlmRecord, SessionRecord
from natrelay.wire import LlmStatus, ProviderSpec

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

LIVE = "live"
INACTIVE = "inactive"
_NAMES = {"#name": "name", "#status": "status"}


def _row(item: Item) -> LlmRecord:
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
        last_heartbeat_at=item.get("lastHeartbeatAt"),
        inactive_since=item.get("inactiveSince"),
        created_at=item.get("createdAt"),
        wake_max_wait=item.get("wakeMaxWait"),
        wake_id=item.get("wakeId"),
        wake_deadline=item.get("wakeDeadline"),
    )


def _session(item: Item) -> SessionRecord:
    return SessionRecord(
        id=item["pk"].removeprefix("session#"),
        names=tuple(sorted(item.get("names") or ())),
        statuses={k: LlmStatus(v) for k, v in (item.get("statuses") or {}).items()},
        heartbeat_at=item.get("heartbeatAt", 0.0),
        generation=int(item.get("generation", 0)),
    )


class DynamoLlmStore:
    """LLM rows (table `llms`, key `name`) and session items (table `tasks`, pk `session#<id>`).

    Register raises NameTakenError; session lookups raise SessionNotFoundError; wake
    claims raise ConditionFailedError carrying the row as it was.
    """

    def __init__(self, client: DynamoDBClient, llms_table: str, tasks_table: str) -> None:
        self._client = client
        self._table = llms_table
        self._sessions = tasks_table

    # --- rows ----------------------------------------------------------------------

    def get(self, name: str) -> LlmRecord | None:
        raw = self._client.get_item(
            TableName=self._table, Key={"name": {"S": name}}, ConsistentRead=True
        ).get("Item")
        return _row(decode(raw)) if raw else None

    def all(self) -> list[LlmRecord]:
        rows = items(self._client, "scan", TableName=self._table, ConsistentRead=True)
        return sorted((_row(row) for row in rows), key=lambda r: r.name)

    def delete(self, name: str) -> bool:
        old = self._client.delete_item(
            TableName=self._table, Key={"name": {"S": name}}, ReturnValues="ALL_OLD"
        ).get("Attributes")
        return old is not None

    def register(
        self,
        session_id: str,
        specs: list[ProviderSpec],
        now: float,
        timeout: float,
        retention: float,
    ) -> tuple[SessionRecord, list[LlmRecord]]:
        """Create or take over the rows and write the session, all or nothing."""
        cutoff = now - timeout
        takeover = (
            "attribute_not_exists(#name) OR sessionId = :sid OR #status = :inactive "
            f"OR {HEARTBEAT_BEFORE}"
        )
        rows: list[Item] = []
        ops: list[dict[str, Any]] = []
        for spec in specs:
            row: Item = {
                "kind": VIRTUAL,
                "type": spec.type,
                "model": spec.model,
                "tier": spec.tier,
                "description": spec.description,
                "extraConfig": spec.extra_config or None,
                "status": spec.initial_status.value,
                "sessionId": session_id,
                "lastHeartbeatAt": now,
                "wakeMaxWait": spec.wake_max_wait_seconds,
                "sweepState": LIVE,
                "sweepAt": now,
            }
            present = {k: v for k, v in row.items() if v is not None}
            absent = [k for k, v in row.items() if v is None]
            names = {f"#{k}": k for k in present} | {"#name": "name", "#status": "status"}
            sets = [f"#{k} = :{k}" for k in present] + [
                "createdAt = if_not_exists(createdAt, :now)"
            ]
            # a row taken back keeps when it was first published; stale state goes
            drop = [*absent, "inactiveSince", "wakeId", "wakeDeadline"]
            rows.append({"name": spec.name, "createdAt": now, **present})
            ops.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": {"name": {"S": spec.name}},
                        "UpdateExpression": f"SET {', '.join(sets)} REMOVE {', '.join(drop)}",
                        "ConditionExpression": takeover,
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
            )
        session: Item = {
            "pk": f"session#{session_id}",
            "sk": "m",
            "names": {s.name for s in specs},
            "statuses": {s.name: s.initial_status.value for s in specs},
            "heartbeatAt": now,
            "expiresAt": int(now + timeout + retention),
        }
        ops.append(
            {
                "Update": {
                    "TableName": self._sessions,
                    "Key": {"pk": {"S": session["pk"]}, "sk": {"S": "m"}},
                    "UpdateExpression": "SET #names = :names, statuses = :statuses, "
                    "heartbeatAt = :now, expiresAt = :exp ADD generation :one",
                    "ExpressionAttributeNames": {"#names": "names"},
                    "ExpressionAttributeValues": values(
                        names=session["names"],
                        statuses=session["statuses"],
                        now=now,
                        exp=session["expiresAt"],
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
                    holder = decode(reason.get("Item") or {}).get("sessionId", "another session")
                    raise NameTakenError(
                        f"LLM name {spec.name!r} is live under publisher session {holder}; "
                        "stop that publisher or choose another name",
                        param="providers.name",
                    ) from exc
            raise
        return self.get_session(session_id), [_row(r) for r in rows]

    # --- sessions ------------------------------------------------------------------

    def get_session(self, session_id: str) -> SessionRecord:
        raw = self._client.get_item(
            TableName=self._sessions,
            Key={"pk": {"S": f"session#{session_id}"}, "sk": {"S": "m"}},
            ConsistentRead=True,
        ).get("Item")
        if not raw:
            raise SessionNotFoundError(
                f"publisher session {session_id} is unknown; register again",
                param="providerSessionId",
            )
        return _session(decode(raw))

    def heartbeat(
        self,
        session: SessionRecord,
        reported: dict[str, LlmStatus],
        now: float,
        timeout: float,
        retention: float,
    ) -> list[LlmRecord]:
        """Refresh every row of the session; raise SessionNotFoundError if one is gone."""
        statuses = {**session.statuses, **{k: v for k, v in reported.items() if k in session.names}}
        rows: list[LlmRecord] = []
        for name in session.names:
            status = statuses.get(name, LlmStatus.ACTIVE)
            try:
                with condition(f"row {name} is no longer held by session {session.id}"):
                    raw = self._client.update_item(
                        TableName=self._table,
                        Key={"name": {"S": name}},
                        UpdateExpression="SET lastHeartbeatAt = :now, sweepState = :live, "
                        "sweepAt = :now, #status = :status REMOVE inactiveSince",
                        ConditionExpression=SESSION_IS,
                        ExpressionAttributeNames={"#status": "status"},
                        ExpressionAttributeValues=values(
                            now=now, live=LIVE, status=status.value, sid=session.id
                        ),
                        ReturnValues="ALL_NEW",
                    )["Attributes"]
            except ConditionFailedError as exc:
                raise SessionNotFoundError(
                    f"{exc.message}; register again", param="providerSessionId"
                ) from exc
            rows.append(_row(decode(raw)))
        self._client.update_item(
            TableName=self._sessions,
            Key={"pk": {"S": f"session#{session.id}"}, "sk": {"S": "m"}},
            UpdateExpression="SET heartbeatAt = :now, statuses = :statuses, expiresAt = :exp",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues=values(
                now=now,
                statuses={k: v.value for k, v in statuses.items()},
                exp=int(now + timeout + retention),
            ),
        )
        return rows

    def set_status(self, session_id: str, name: str, status: LlmStatus) -> None:
        """Record a status the publisher established (e.g. after a wake) on row and session."""
        self._client.update_item(
            TableName=self._sessions,
            Key={"pk": {"S": f"session#{session_id}"}, "sk": {"S": "m"}},
            UpdateExpression="SET statuses.#n = :status",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames={"#n": name},
            ExpressionAttributeValues=values(status=status.value),
        )

    def deregister(self, session: SessionRecord, now: float) -> list[LlmRecord]:
        rows: list[LlmRecord] = []
        for name in session.names:
            try:
                rows.append(self._mark_inactive(name, now, SESSION_IS, sid=session.id))
            except ConditionFailedError:
                continue
        self._client.delete_item(
            TableName=self._sessions,
            Key={"pk": {"S": f"session#{session.id}"}, "sk": {"S": "m"}},
        )
        return rows

    # --- wake markers --------------------------------------------------------------

    def claim_wake(self, name: str, wake_id: str, deadline: float, now: float) -> LlmRecord:
        """Set the wake marker if the row is hibernating and no live marker exists.

        Raises ConditionFailedError whose `old` is the row as it was (the wake to wait for).
        """
        with condition(f"wake of {name} already claimed"):
            raw = self._client.update_item(
                TableName=self._table,
                Key={"name": {"S": name}},
                UpdateExpression="SET wakeId = :wake, wakeDeadline = :deadline",
                ConditionExpression=f"{STATUS_IS} AND {WAKE_FREE}",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values(
                    status=LlmStatus.HIBERNATING.value, wake=wake_id, deadline=deadline, now=now
                ),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )["Attributes"]
        return _row(decode(raw))

    def finish_wake(self, name: str, wake_id: str, ok: bool) -> None:
        """Clear the marker; on success the row becomes active. A stale wake changes nothing."""
        update = "SET #status = #status REMOVE wakeId, wakeDeadline"
        vals: dict[str, Any] = {"wake": wake_id}
        if ok:
            update = "SET #status = :active REMOVE wakeId, wakeDeadline"
            vals["active"] = LlmStatus.ACTIVE.value
        try:
            with condition("stale wake"):
                self._client.update_item(
                    TableName=self._table,
                    Key={"name": {"S": name}},
                    UpdateExpression=update,
                    ConditionExpression=WAKE_IS,
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues=values(**vals),
                )
        except ConditionFailedError:
            return

    # --- sweep ---------------------------------------------------------------------

    def _query_sweep(self, state: str, before: float) -> list[Item]:
        return list(
            items(
                self._client,
                "query",
                TableName=self._table,
                IndexName="bySweep",
                KeyConditionExpression="sweepState = :state AND sweepAt < :before",
                ExpressionAttributeValues=values(state=state, before=before),
            )
        )

    def stale(self, cutoff: float) -> list[tuple[str, str | None]]:
        """(name, sessionId) of live rows whose heartbeat is older than cutoff."""
        return [(i["name"], i.get("sessionId")) for i in self._query_sweep(LIVE, cutoff)]

    def expire(self, name: str, cutoff: float, now: float) -> LlmRecord:
        """Mark a row inactive unless a heartbeat landed since (ConditionFailedError)."""
        return self._mark_inactive(
            name, now, f"sweepState = :live AND {HEARTBEAT_BEFORE}", live=LIVE, cutoff=cutoff
        )

    def retired(self, cutoff: float) -> list[str]:
        return [i["name"] for i in self._query_sweep(INACTIVE, cutoff)]

    def delete_retired(self, name: str, cutoff: float) -> None:
        with condition(f"{name} came back"):
            self._client.delete_item(
                TableName=self._table,
                Key={"name": {"S": name}},
                ConditionExpression=f"{STATUS_IS} AND inactiveSince < :cutoff",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values(status=LlmStatus.INACTIVE.value, cutoff=cutoff),
            )

    def _mark_inactive(self, name: str, now: float, cond: str, **vals: Any) -> LlmRecord:
        with condition(f"{name} changed meanwhile"):
            raw = self._client.update_item(
                TableName=self._table,
                Key={"name": {"S": name}},
                UpdateExpression="SET #status = :inactive, inactiveSince = :now, "
                "sweepState = :inactive, sweepAt = :now REMOVE wakeId, wakeDeadline",
                ConditionExpression=f"attribute_exists(#name) AND {cond}",
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues=values(
                    inactive=LlmStatus.INACTIVE.value, now=now, **vals
                ),
                ReturnValues="ALL_NEW",
            )["Attributes"]
        return _row(decode(raw))
