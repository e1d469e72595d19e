"""Admin writes to LLM rows (`natrelay llm apply`): public rows, and the settings admins
own on virtual rows, for several rows in one transaction (all of them, or none).

A public row claims its name for `PUBLIC_OWNER` in the keys table, as a publisher key
claims the names it publishes: neither can take the other's. It has no `sweepState`, so
the sweep's index never lists it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from natrelay.store._dynamo import decode, encode, off_loop, values
from natrelay.store.errors import ConditionFailedError
from natrelay.store.keys import DynamoKeyStore
from natrelay.store.llms import DynamoLlmStore
from natrelay.store.records import PUBLIC, PUBLIC_OWNER, VIRTUAL

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Row attributes an apply may write, by the record field they fill.
ATTRIBUTES = {
    "type": "type",
    "model": "model",
    "tier": "tier",
    "description": "description",
    "admin_tier": "adminTier",
    "admin_description": "adminDescription",
    "fallbacks": "fallbacks",
    "max_queue_depth": "maxQueueDepth",
    "wake_after_queue_seconds": "wakeAfterQueueSeconds",
    "shared_pool": "sharedPool",
    "base_url": "baseUrl",
    "api_key_ref": "apiKeyRef",
    "timeout_seconds": "timeoutSeconds",
}


@dataclass(frozen=True)
class RowWrite:
    """One row's part of an apply: a new public row (`create`), or changes to a row
    that must still be of `kind`. `sets` and `removes` name record fields (ATTRIBUTES)."""

    name: str
    kind: str
    create: bool = False
    sets: dict[str, Any] = field(default_factory=dict)
    removes: tuple[str, ...] = ()


class ApplyConflictError(ConditionFailedError):
    """The transaction lost on write `index`: its name is owned by `owner` (a publisher
    key), or its row changed meanwhile (`owner` None: created, deleted, or of another
    kind now)."""

    def __init__(self, index: int, owner: str | None) -> None:
        super().__init__(f"apply lost on write {index}")
        self.index = index
        self.owner = owner


def _stored(attr: str, value: Any) -> Any:
    if attr == "apiKeyRef":
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if isinstance(value, tuple):
        return list(value)
    return value


class DynamoRowAdminStore:
    def __init__(self, client: DynamoDBClient, rows: DynamoLlmStore, keys: DynamoKeyStore):
        self._client = client
        self._rows = rows
        self._keys = keys

    def _create_ops(self, write: RowWrite, now: float) -> list[dict[str, Any]]:
        item = {
            "name": write.name,
            "kind": PUBLIC,
            "status": "active",
            "owner": PUBLIC_OWNER,
            "createdAt": now,
            **{ATTRIBUTES[k]: _stored(ATTRIBUTES[k], v) for k, v in write.sets.items()},
        }
        return [
            self._keys.name_claim_op(write.name, PUBLIC_OWNER, now),
            {
                "Put": {
                    "TableName": self._rows.table,
                    "Item": encode(item),
                    "ConditionExpression": "attribute_not_exists(#name)",
                    "ExpressionAttributeNames": {"#name": "name"},
                }
            },
        ]

    def _update_op(self, write: RowWrite) -> dict[str, Any]:
        names = {"#name": "name", "#kind": "kind"}
        vals: dict[str, Any] = {"kind": write.kind}
        sets, removes = [], []
        for i, (key, value) in enumerate(write.sets.items()):
            attr = ATTRIBUTES[key]
            names[f"#a{i}"] = attr
            vals[f"v{i}"] = _stored(attr, value)
            sets.append(f"#a{i} = :v{i}")
        for i, key in enumerate(write.removes):
            names[f"#r{i}"] = ATTRIBUTES[key]
            removes.append(f"#r{i}")
        update = " ".join(
            part
            for part in (
                f"SET {', '.join(sets)}" if sets else "",
                f"REMOVE {', '.join(removes)}" if removes else "",
            )
            if part
        )
        kind = "#kind = :kind"
        if write.kind == VIRTUAL:  # rows from before kinds were written
            kind = f"({kind} OR attribute_not_exists(#kind))"
        return {
            "Update": {
                "TableName": self._rows.table,
                "Key": {"name": {"S": write.name}},
                "UpdateExpression": update,
                "ConditionExpression": f"attribute_exists(#name) AND {kind}",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values(**vals),
            }
        }

    @off_loop
    def apply(self, writes: list[RowWrite], now: float) -> None:
        """Write every row's changes in one transaction; ApplyConflictError names the
        write that lost (nothing is written then)."""
        ops: list[dict[str, Any]] = []
        owners: list[int] = []  # the write each transaction item belongs to
        for index, write in enumerate(writes):
            if write.create:
                made = self._create_ops(write, now)
            elif write.sets or write.removes:
                made = [self._update_op(write)]
            else:
                continue
            ops += made
            owners += [index] * len(made)
        if not ops:
            return
        try:
            self._client.transact_write_items(TransactItems=ops)  # type: ignore[arg-type]
        except ClientError as exc:
            reasons = exc.response.get("CancellationReasons", [])
            for i, reason in enumerate(reasons):
                if reason.get("Code") != "ConditionalCheckFailed":
                    continue
                update: Any = ops[i].get("Update", {})
                claim = update.get("TableName") == self._keys.table
                old = decode(reason.get("Item") or {})
                owner = str(old["owner"]) if claim and old.get("owner") else None
                raise ApplyConflictError(owners[i], owner) from exc
            raise
