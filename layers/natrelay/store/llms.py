"""LLM rows in DynamoDB (table `llms`, key `name`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from natrelay.store._dynamo import (
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
from natrelay.store.records import AGENT, CHAT_ONLY, VIRTUAL, AgentRecord, LlmRecord, MemberRecord
from natrelay.store.row_cache import RowCache
from natrelay.wire import LlmStatus, ProviderSpec

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

LIVE = "live"
INACTIVE = "inactive"
_NAMES = {"#name": "name", "#status": "status"}
# A registration joins the pool of a row that is new, its key's, or without an owner.
_JOIN = "attribute_not_exists(#name) OR attribute_not_exists(#owner) OR #owner = :owner"
# A row's members are attributes `m#<session id>` (a map each): a member can be added,
# refreshed or removed in one write, whatever else the row holds.
MEMBER_PREFIX = "m#"


def member_attr(session_id: str) -> str:
    return f"{MEMBER_PREFIX}{session_id}"


def _member(session_id: str, raw: Any) -> MemberRecord | None:
    if not isinstance(raw, dict):
        return None
    return MemberRecord(
        session_id=session_id,
        status=LlmStatus(raw.get("status", LlmStatus.ACTIVE.value)),
        heartbeat_at=float(raw.get("heartbeatAt", 0)),
        max_concurrency=raw.get("maxConcurrency"),
        wake_max_wait=raw.get("wakeMaxWait"),
        doorbell=raw.get("doorbell"),
        endpoints=frozenset(raw["endpoints"]) if raw.get("endpoints") else CHAT_ONLY,
    )


def _extra_config(stored: Any) -> dict[str, Any]:
    if isinstance(stored, str):  # JSON text; older rows hold a map
        stored = json.loads(stored)
    return stored if isinstance(stored, dict) else {}


def _agent(item: Item) -> AgentRecord | None:
    if item.get("kind") != AGENT:
        return None
    target, model = item.get("agentTarget"), item.get("agentModel")
    defaults = _extra_config(item.get("defaults"))
    return AgentRecord(target, model, item.get("systemPrompt"), defaults, "sessionId" in item)


def row_record(item: Item) -> LlmRecord:
    return LlmRecord(
        name=item["name"],
        kind=item.get("kind", VIRTUAL),
        type=item.get("type", ""),
        model=item.get("model", ""),
        # what an admin set wins over what the publisher says
        tier=item.get("adminTier", item.get("tier")),
        description=item.get("adminDescription", item.get("description")),
        extra_config=_extra_config(item.get("extraConfig")),
        status=LlmStatus(item["status"]),
        session_id=item.get("sessionId"),
        owner=item.get("owner"),
        last_heartbeat_at=item.get("lastHeartbeatAt"),
        inactive_since=item.get("inactiveSince"),
        created_at=item.get("createdAt"),
        wake_max_wait=item.get("wakeMaxWait"),
        wake_id=item.get("wakeId"),
        wake_deadline=item.get("wakeDeadline"),
        wake_target=item.get("wakeTarget"),
        members={
            k.removeprefix(MEMBER_PREFIX): m
            for k, v in item.items()
            if k.startswith(MEMBER_PREFIX) and (m := _member(k.removeprefix(MEMBER_PREFIX), v))
        },
        max_queue_depth=item.get("maxQueueDepth"),
        wake_after_queue_seconds=item.get("wakeAfterQueueSeconds"),
        aliases=tuple(item.get("aliases") or ()),
        fallbacks=tuple(item.get("fallbacks") or ()),
        base_url=item.get("baseUrl"),
        api_key_ref=_extra_config(item["apiKeyRef"]) if item.get("apiKeyRef") else None,
        timeout_seconds=item.get("timeoutSeconds"),
        admin_description=item.get("adminDescription"),
        admin_tier=item.get("adminTier"),
        shared_pool=bool(item.get("sharedPool")),
        agent=_agent(item),
    )


class DynamoLlmStore:
    """LLM rows: what is published, by whom, its status and its wake marker.

    Conditional writes raise ConditionFailedError; where the docstring says so, its
    `record` is the row as it was.
    """

    def __init__(self, client: DynamoDBClient, table: str, cache: RowCache | None = None) -> None:
        self._client = client
        self.table = table
        self._cache = cache

    def _key(self, name: str) -> dict[str, Any]:
        return {"name": {"S": name}}

    def _get(self, name: str) -> LlmRecord | None:
        raw = self._client.get_item(
            TableName=self.table, Key=self._key(name), ConsistentRead=True
        ).get("Item")
        return row_record(decode(raw)) if raw else None

    async def get(self, name: str) -> LlmRecord | None:
        """The row (from the brief in-process cache, when there is one)."""
        if self._cache is None:
            return await self._read(name)
        found, row = self._cache.get(name)
        if found:
            return row
        version = self._cache.version
        row = await self._read(name)
        self._cache.put(name, row, version)
        return row

    async def fresh(self, name: str) -> LlmRecord | None:
        """The row as DynamoDB has it now, never from the cache (admins' changes)."""
        return await self._read(name)

    @off_loop
    def _read(self, name: str) -> LlmRecord | None:
        return self._get(name)

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

    def join_op(
        self, spec: ProviderSpec, session_id: str, owner: str, now: float
    ) -> tuple[dict[str, Any], Item]:
        """The transaction item that creates the row of `spec` or joins its pool, for
        the session (for DynamoSessionStore.register), and the row fields it writes."""
        row: Item = {
            "kind": VIRTUAL,
            "type": spec.type,
            "model": spec.model,
            "tier": spec.tier,
            "description": spec.description,
            # JSON text, not a map: any JSON fits (maps are limited to 32 levels and
            # numbers to 38 digits)
            "extraConfig": json.dumps(spec.extra_config) if spec.extra_config else None,
            "status": spec.initial_status.value,
            "sessionId": session_id,
            "owner": owner,
            "lastHeartbeatAt": now,
            "wakeMaxWait": spec.wake_max_wait_seconds,
            "aliases": list(spec.aliases) or None,
            "sweepState": LIVE,
            "sweepAt": now,
        }
        member = {
            "status": spec.initial_status.value,
            "heartbeatAt": now,
            "maxConcurrency": spec.max_concurrency,
            "wakeMaxWait": spec.wake_max_wait_seconds,
            "endpoints": [e.value for e in spec.endpoints] if spec.endpoints else None,
        }
        present = {k: v for k, v in row.items() if v is not None}
        names = (
            {f"#{k}": k for k in present}
            | _NAMES
            | {"#owner": "owner", "#me": member_attr(session_id), "#aliases": "aliases"}
        )
        sets = [f"#{k} = :{k}" for k in present] + [
            "createdAt = if_not_exists(createdAt, :now)",
            "#me = :member",
        ]
        # the row's aliases are its last registration's
        removes = ["inactiveSince"] + ([] if spec.aliases else ["#aliases"])
        # a row taken back keeps when it was first published; a retired one comes back
        op = {
            "Update": {
                "TableName": self.table,
                "Key": self._key(spec.name),
                "UpdateExpression": f"SET {', '.join(sets)} REMOVE {', '.join(removes)}",
                "ConditionExpression": _JOIN,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values(
                    **present,
                    now=now,
                    member={k: v for k, v in member.items() if v is not None},
                ),
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }
        return op, {"name": spec.name, "createdAt": now, **present}

    # --- a member's rows -------------------------------------------------------------

    @off_loop
    def beat(
        self, name: str, session_id: str, now: float, *, status: LlmStatus | None
    ) -> LlmRecord:
        """Refresh the member's heartbeat (and the row's: the last of any member's);
        ConditionFailedError if the session is no longer a member.

        `status`: what the publisher just reported, written as is. None: the member's
        status is left as the relay has it (a finished wake may have set it after the
        caller read the session). A retired row comes back with its live members.
        """
        sets = [
            "#me.heartbeatAt = :now",
            "lastHeartbeatAt = :now",
            "sweepState = :live",
            "sweepAt = :now",
        ]
        vals: dict[str, Any] = {"now": now, "live": LIVE}
        if status is not None:
            sets += ["#me.#status = :status", "#status = :status"]
            vals["status"] = status.value
        else:
            # a row the sweep retired comes back: its status is the member's
            sets.append("#status = #me.#status")
        with condition(f"session is no longer a member of {name}"):
            raw = self._client.update_item(
                TableName=self.table,
                Key=self._key(name),
                UpdateExpression=f"SET {', '.join(sets)} REMOVE inactiveSince",
                ConditionExpression="attribute_exists(#me)",
                ExpressionAttributeNames={"#me": member_attr(session_id), "#status": "status"},
                ExpressionAttributeValues=values(**vals),
                ReturnValues="ALL_NEW",
            )["Attributes"]
        return row_record(decode(raw))

    @off_loop
    def set_member_status(self, name: str, session_id: str, status: LlmStatus) -> None:
        """Record a member's status the relay established (a finished wake); no-op if
        the session left the pool."""
        try:
            with condition(f"session is no longer a member of {name}"):
                self._client.update_item(
                    TableName=self.table,
                    Key=self._key(name),
                    UpdateExpression="SET #me.#status = :status, #status = :status",
                    ConditionExpression="attribute_exists(#me)",
                    ExpressionAttributeNames={
                        "#me": member_attr(session_id),
                        "#status": "status",
                    },
                    ExpressionAttributeValues=values(status=status.value),
                )
        except ConditionFailedError:
            return

    @off_loop
    def leave(self, name: str, session_id: str) -> LlmRecord | None:
        """Take the session out of the row's pool; the row as it is left (None: the
        session was not a member)."""
        try:
            with condition(f"session is not a member of {name}"):
                raw = self._client.update_item(
                    TableName=self.table,
                    Key=self._key(name),
                    UpdateExpression="REMOVE #me",
                    ConditionExpression="attribute_exists(#me)",
                    ExpressionAttributeNames={"#me": member_attr(session_id)},
                    ReturnValues="ALL_NEW",
                )["Attributes"]
        except ConditionFailedError:
            return None
        return row_record(decode(raw))

    @off_loop
    def drop_dead_members(self, name: str, session_ids: list[str], cutoff: float) -> None:
        """Remove members whose heartbeat is older than cutoff (each checked in the
        write: one that beat meanwhile stays)."""
        for session_id in session_ids:
            try:
                with condition("member came back"):
                    self._client.update_item(
                        TableName=self.table,
                        Key=self._key(name),
                        UpdateExpression="REMOVE #m",
                        ConditionExpression="#m.heartbeatAt < :cutoff",
                        ExpressionAttributeNames={"#m": member_attr(session_id)},
                        ExpressionAttributeValues=values(cutoff=cutoff),
                    )
            except ConditionFailedError:
                continue

    @off_loop
    def retire_if_deserted(self, name: str, now: float, alive_after: float) -> LlmRecord:
        """Mark the row inactive if no member beat after `alive_after` (its heartbeat is
        the last of any member's); ConditionFailedError otherwise."""
        return self._mark_inactive(name, now, "lastHeartbeatAt <= :after", after=alive_after)

    # --- wake markers ----------------------------------------------------------------

    @off_loop
    def claim_wake(
        self, name: str, wake_id: str, target: str, deadline: float, now: float
    ) -> LlmRecord:
        """Set the pool's wake marker (waking member `target`) if no live marker exists
        and the target is still a member, and asleep.

        ConditionFailedError's `record` is the row as it was (the wake to wait for), or
        None if there is no row.
        """
        with condition(f"wake of {name} already claimed", row_record):
            raw = self._client.update_item(
                TableName=self.table,
                Key=self._key(name),
                UpdateExpression="SET wakeId = :wake, wakeDeadline = :deadline, "
                "wakeTarget = :target",
                ConditionExpression=f"#target.#status = :asleep AND {WAKE_FREE}",
                ExpressionAttributeNames={"#target": member_attr(target), "#status": "status"},
                ExpressionAttributeValues=values(
                    wake=wake_id,
                    deadline=deadline,
                    target=target,
                    now=now,
                    asleep=LlmStatus.HIBERNATING.value,
                ),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )["Attributes"]
        return row_record(decode(raw))

    @off_loop
    def clear_wake(self, name: str, wake_id: str) -> bool:
        """Remove the marker of this wake. False if the marker is another wake's or
        gone: a stale wake changes nothing."""
        update = "SET #status = #status REMOVE wakeId, wakeDeadline, wakeTarget"
        vals: dict[str, Any] = {"wake": wake_id}
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

    def _mark_inactive(self, name: str, now: float, cond: str, **vals: Any) -> LlmRecord:
        return mark_inactive(self._client, self.table, name, now, cond, **vals)


def mark_inactive(
    client: Any, table: str, name: str, now: float, cond: str, **vals: Any
) -> LlmRecord:
    """Mark a row inactive if `cond` holds (ConditionFailedError otherwise)."""
    with condition(f"{name} changed meanwhile"):
        raw = client.update_item(
            TableName=table,
            Key={"name": {"S": name}},
            UpdateExpression="SET #status = :inactive, inactiveSince = :now, "
            "sweepState = :inactive, sweepAt = :now REMOVE wakeId, wakeDeadline, wakeTarget",
            ConditionExpression=f"attribute_exists(#name) AND {cond}",
            ExpressionAttributeNames=_NAMES,
            ExpressionAttributeValues=values(inactive=LlmStatus.INACTIVE.value, now=now, **vals),
            ReturnValues="ALL_NEW",
        )["Attributes"]
    return row_record(decode(raw))
