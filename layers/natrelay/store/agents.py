"""Agents in the LLM table: an item keyed by the agent's name, `kind: agent`.

Agents share the rows' table because they share the rows' name space: a name is a row
or an agent, never both (the table's key), and its owner is claimed in the keys table
as a row's is (`AGENT_OWNER` for an admin's agent, the publisher key for a published
one). A published agent is a member item like a row's (`m#<session id>`), beaten and
swept with its session's rows, so it has their lifecycle; an admin's has no
`sweepState`, so the sweep's index never lists it.

Attributes: `agentTarget` (a row's name) or `agentModel` (a backend model: every row
serving it), `systemPrompt`, `defaults` (JSON text), `description`. Rows' `model`
feeds the sparse `byModel` index, which lists the rows serving a backend model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from natrelay.store._dynamo import Item, decode, items, off_loop, values
from natrelay.store.keys import DynamoKeyStore
from natrelay.store.llms import LIVE, DynamoLlmStore, member_attr
from natrelay.store.records import AGENT, AGENT_OWNER, AgentRecord
from natrelay.store.row_admin import ApplyConflictError
from natrelay.store.row_cache import RowCache

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# An agent may be written over when it is new, or already an agent of the same owner.
_MINE = "attribute_not_exists(#name) OR (#kind = :agent AND #owner = :owner)"
# A published agent: the same, or an agent without an owner.
_JOINABLE = (
    "attribute_not_exists(#name) OR "
    "(#kind = :agent AND (attribute_not_exists(#owner) OR #owner = :owner))"
)


@dataclass(frozen=True)
class AgentWrite:
    """One agent as a whole (an apply replaces what was there)."""

    name: str
    agent: AgentRecord
    description: str | None = None


def agent_item(write: AgentWrite) -> Item:
    """The attributes of an agent (None where unset)."""
    a = write.agent
    return {
        "kind": AGENT,
        "agentTarget": a.target,
        "agentModel": a.target_model,
        "systemPrompt": a.system_prompt,
        "defaults": json.dumps(a.defaults, sort_keys=True) if a.defaults else None,
        "description": write.description,
    }


class DynamoAgentStore:
    def __init__(
        self,
        client: DynamoDBClient,
        rows: DynamoLlmStore,
        keys: DynamoKeyStore,
        *,
        cache: RowCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._rows = rows
        self._keys = keys
        self.table = rows.table
        # model -> (when read, the row cache's version then, the names): long-lived
        # mode, kept as long as rows are (any write to the table ends it).
        self._cache = cache
        self._clock = clock
        self._pools: dict[str, tuple[float, int, list[str]]] = {}

    # --- admins' agents ----------------------------------------------------------------

    def _write_op(
        self,
        write: AgentWrite,
        fields: Item,
        condition: str,
        now: float,
        *,
        member: tuple[str, Item] | None = None,
        clear: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """The transaction item that writes the agent whole (`fields` besides what it
        means; what it leaves unset removed, and `clear`), if `condition` holds."""
        item = {k: v for k, v in (agent_item(write) | fields).items() if v is not None}
        sets = [f"#a_{k} = :a_{k}" for k in item] + ["createdAt = if_not_exists(createdAt, :now)"]
        names = {f"#a_{k}": k for k in item} | {"#name": "name", "#kind": "kind", "#owner": "owner"}
        vals = {f"a_{k}": v for k, v in item.items()} | {"agent": AGENT, "now": now}
        if member is not None:
            sets.append("#me = :member")
            names["#me"], vals["member"] = member
        return {
            "Update": {
                "TableName": self.table,
                "Key": {"name": {"S": write.name}},
                "UpdateExpression": "SET " + ", ".join(sets) + _removed(item, *clear),
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values(**vals, owner=item["owner"]),
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    # --- admins' agents ----------------------------------------------------------------

    @off_loop
    def apply(self, writes: list[AgentWrite], now: float) -> None:
        """Write every agent (its name claimed for AGENT_OWNER) in one transaction, all
        or none; ApplyConflictError names the write that lost: its name is a key's
        (`owner`), or a row's or a published agent's (`owner` None)."""
        ops: list[dict[str, Any]] = []
        fields = {"status": "active", "owner": AGENT_OWNER}
        for write in writes:
            ops.append(self._keys.name_claim_op(write.name, AGENT_OWNER, now))
            ops.append(self._write_op(write, fields, _MINE, now))
        try:
            self._client.transact_write_items(TransactItems=ops)  # type: ignore[arg-type]
        except ClientError as exc:
            for i, reason in enumerate(exc.response.get("CancellationReasons", [])):
                if reason.get("Code") != "ConditionalCheckFailed":
                    continue
                old = decode(reason.get("Item") or {})
                owner = str(old["owner"]) if i % 2 == 0 and old.get("owner") else None
                raise ApplyConflictError(i // 2, owner) from exc
            raise

    # --- published agents --------------------------------------------------------------

    def join_op(self, write: AgentWrite, session_id: str, owner: str, now: float) -> dict[str, Any]:
        """The transaction item that publishes the agent for the session (a row's
        lifecycle: its member beats with the session's rows): new, its key's, or an
        agent without an owner."""
        fields = {
            "status": "active",
            "sessionId": session_id,
            "owner": owner,
            "lastHeartbeatAt": now,
            "sweepState": LIVE,
            "sweepAt": now,
        }
        return self._write_op(
            write,
            fields,
            _JOINABLE,
            now,
            member=(member_attr(session_id), {"status": "active", "heartbeatAt": now}),
            clear=("inactiveSince",),
        )

    # --- pools by model ----------------------------------------------------------------

    def _rows_of(self, model: str) -> list[str]:
        found = items(
            self._client,
            "query",
            TableName=self.table,
            IndexName="byModel",
            KeyConditionExpression="#model = :model",
            ExpressionAttributeNames={"#model": "model"},
            ExpressionAttributeValues=values(model=model),
        )
        return sorted(str(i["name"]) for i in found)

    @off_loop
    def _read_pool(self, model: str) -> list[str]:
        return self._rows_of(model)

    async def rows_of(self, model: str) -> list[str]:
        """The names of the rows whose backend model is `model` (the index is eventually
        consistent: a row published a moment ago may be missing for that moment)."""
        cache = self._cache
        if cache is None:
            return await self._read_pool(model)
        now, version = self._clock(), cache.version
        hit = self._pools.get(model)
        if hit is not None and now - hit[0] <= cache.ttl and hit[1] == version:
            return hit[2]
        names = await self._read_pool(model)
        if len(self._pools) > 1000:
            self._pools.clear()
        self._pools[model] = (now, version, names)
        return names


# Attributes an agent may hold; those a write leaves unset are removed.
_AGENT_ATTRIBUTES = ("agentTarget", "agentModel", "systemPrompt", "defaults", "description")


def _removed(item: Item, *more: str) -> str:
    gone = [k for k in _AGENT_ATTRIBUTES if k not in item] + list(more)
    return f" REMOVE {', '.join(gone)}" if gone else ""


__all__ = ["AgentWrite", "DynamoAgentStore", "agent_item"]
