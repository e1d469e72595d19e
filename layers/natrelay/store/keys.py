"""Keys and name ownership in DynamoDB (table `keys`).

pk `keys`, sk `<key id>`: a key (one partition, so one Query lists them all; keys are
few and rarely written). pk `name#<name in lower case>`, sk `owner`: the publisher key
that owns an LLM name, whatever its case, until an admin releases it (claims made before
names were owned case-insensitively are keyed by their spelling: still read, never
written). pk `owned#<key id>`, sk `names`: the string set of the names (lower case) a
publisher key claimed, for its cap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from natrelay.store._dynamo import (
    Item,
    condition,
    decode,
    encode,
    is_condition_failure,
    items,
    off_loop,
    values,
)
from natrelay.store.records import PUBLIC_OWNER, KeyRecord
from natrelay.wire import Priority, Role

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_KEYS = "keys"


def key_record(item: Item) -> KeyRecord:
    models = item.get("models")
    return KeyRecord(
        id=item["sk"],
        label=item.get("label", ""),
        role=Role(item["role"]),
        secret_hash=item["secretHash"],
        created_at=item["createdAt"],
        models=tuple(models) if models is not None else None,
        rpm=item.get("rpm"),
        concurrency=item.get("concurrency"),
        tokens_per_day=item.get("tokensPerDay"),
        priority=Priority(item.get("priority", Priority.INTERACTIVE.value)),
        expires_at=item.get("validUntil"),
        revoked_at=item.get("revokedAt"),
    )


class DynamoKeyStore:
    """Keys (create, read, list, revoke) and the names publisher keys own."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self.table = table

    def _key(self, key_id: str) -> dict[str, Any]:
        return {"pk": {"S": _KEYS}, "sk": {"S": key_id}}

    @off_loop
    def put(self, key: KeyRecord) -> None:
        """Store a new key; ConditionFailedError if the id exists."""
        item: Item = {
            "pk": _KEYS,
            "sk": key.id,
            "label": key.label,
            "role": key.role.value,
            "secretHash": key.secret_hash,
            "createdAt": key.created_at,
            "models": list(key.models) if key.models is not None else None,
            "rpm": key.rpm,
            "concurrency": key.concurrency,
            "tokensPerDay": key.tokens_per_day,
            "priority": None if key.priority is Priority.INTERACTIVE else key.priority.value,
            "validUntil": key.expires_at,
        }
        with condition(f"key {key.id} exists"):
            self._client.put_item(
                TableName=self.table,
                Item=encode(item),
                ConditionExpression="attribute_not_exists(pk)",
            )

    @off_loop
    def get(self, key_id: str) -> KeyRecord | None:
        raw = self._client.get_item(
            TableName=self.table, Key=self._key(key_id), ConsistentRead=True
        ).get("Item")
        return key_record(decode(raw)) if raw else None

    @off_loop
    def all(self) -> list[KeyRecord]:
        found = items(
            self._client,
            "query",
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues=values(pk=_KEYS),
            ConsistentRead=True,
        )
        return sorted((key_record(i) for i in found), key=lambda k: k.created_at)

    @off_loop
    def revoke(self, key_id: str, now: float) -> KeyRecord:
        """Mark the key revoked (once: a second revoke keeps the first time).

        ConditionFailedError if there is no such key.
        """
        with condition(f"no key {key_id}"):
            raw = self._client.update_item(
                TableName=self.table,
                Key=self._key(key_id),
                UpdateExpression="SET revokedAt = if_not_exists(revokedAt, :now)",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=values(now=now),
                ReturnValues="ALL_NEW",
            )["Attributes"]
        return key_record(decode(raw))

    @off_loop
    def set_limits(
        self, key_id: str, *, rpm: int | None, concurrency: int | None, tokens_per_day: int | None
    ) -> KeyRecord:
        """Set the key's limits (None: no limit). ConditionFailedError if there is no such
        key."""
        limits = {"rpm": rpm, "concurrency": concurrency, "tokensPerDay": tokens_per_day}
        given = {name: value for name, value in limits.items() if value is not None}
        parts = []
        if given:
            parts.append("SET " + ", ".join(f"{name} = :{name}" for name in given))
        if len(given) < len(limits):
            parts.append("REMOVE " + ", ".join(n for n in limits if n not in given))
        extra: dict[str, Any] = {"ExpressionAttributeValues": values(**given)} if given else {}
        with condition(f"no key {key_id}"):
            raw = self._client.update_item(
                TableName=self.table,
                Key=self._key(key_id),
                UpdateExpression=" ".join(parts),
                ConditionExpression="attribute_exists(pk)",
                ReturnValues="ALL_NEW",
                **extra,
            )["Attributes"]
        return key_record(decode(raw))

    # --- names -----------------------------------------------------------------------

    def _name_key(self, name: str) -> dict[str, Any]:
        return {"pk": {"S": f"name#{name.lower()}"}, "sk": {"S": "owner"}}

    @staticmethod
    def _legacy_key(name: str) -> dict[str, Any] | None:
        """Where a claim made before names were owned case-insensitively is (None: the
        name is in lower case, the key of today)."""
        return None if name == name.lower() else {"pk": {"S": f"name#{name}"}, "sk": {"S": "owner"}}

    def _claim(self, name: str) -> Item | None:
        """The claim item of `name` (or of its spelling from before, if only that)."""
        for key in (self._name_key(name), self._legacy_key(name)):
            if key is not None:
                raw = self._client.get_item(TableName=self.table, Key=key, ConsistentRead=True).get(
                    "Item"
                )
                if raw:
                    return decode(raw)
        return None

    def legacy_owners(self, names: list[str]) -> dict[str, str]:
        """The owners of claims made under these spellings before names were owned
        case-insensitively (such claims are never made again: reading them first is no
        race)."""
        out: dict[str, str] = {}
        for name in names:
            key = self._legacy_key(name)
            raw = self._client.get_item(TableName=self.table, Key=key).get("Item") if key else None
            owner = self.owner_of_claim(decode(raw)) if raw else None
            if owner is not None:
                out[name] = owner
        return out

    def _owned_key(self, key_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"owned#{key_id}"}, "sk": {"S": "names"}}

    @off_loop
    def owned(self, key_id: str) -> frozenset[str]:
        """The names (lower case) the publisher key claimed."""
        raw = self._client.get_item(
            TableName=self.table, Key=self._owned_key(key_id), ConsistentRead=True
        ).get("Item")
        return frozenset(decode(raw).get("names") or ()) if raw else frozenset()

    def owned_op(self, key_id: str, names: set[str], new: int, cap: int) -> dict[str, Any]:
        """The transaction item that adds `names` to those the key owns; its condition
        fails unless `new` more still fit under `cap`."""
        return {
            "Update": {
                "TableName": self.table,
                "Key": self._owned_key(key_id),
                "UpdateExpression": "ADD #names :names",
                "ConditionExpression": "attribute_not_exists(#names) OR size(#names) <= :room",
                "ExpressionAttributeNames": {"#names": "names"},
                "ExpressionAttributeValues": values(
                    names={n.lower() for n in names}, room=cap - new
                ),
            }
        }

    def _disown(self, owner: str | None, name: str) -> None:
        """Take a released name off its owner's list (public rows' names are on none)."""
        if owner is None or owner == PUBLIC_OWNER:
            return
        try:
            self._client.update_item(
                TableName=self.table,
                Key=self._owned_key(owner),
                UpdateExpression="DELETE #names :name",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#names": "names"},
                ExpressionAttributeValues=values(name={name.lower()}),
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise

    def name_claim_op(
        self, name: str, owner: str, now: float, *, alias_of: str | None = None
    ) -> dict[str, Any]:
        """The transaction item that claims `name` for `owner` (or keeps its claim);
        its condition fails when another key owns the name. `alias_of`: the name is an
        alias of that row (`alias_of(name)` reads it back)."""
        update = "SET #owner = :owner, claimedAt = if_not_exists(claimedAt, :now)"
        vals: dict[str, Any] = {"owner": owner, "now": now}
        if alias_of is not None:
            update += ", aliasOf = :target"
            vals["target"] = alias_of
        else:  # a name of the key's own rows is no alias any more
            update += " REMOVE aliasOf"
        return {
            "Update": {
                "TableName": self.table,
                "Key": self._name_key(name),
                "UpdateExpression": update,
                "ConditionExpression": "attribute_not_exists(pk) OR #owner = :owner",
                "ExpressionAttributeNames": {"#owner": "owner"},
                "ExpressionAttributeValues": values(**vals),
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    @off_loop
    def alias_of(self, name: str) -> str | None:
        """The row `name` was last claimed as an alias of (None: never one)."""
        claim = self._claim(name)
        target = claim.get("aliasOf") if claim else None
        return str(target) if target is not None else None

    @staticmethod
    def owner_of_claim(item: Item) -> str | None:
        """The owner named by a name-claim item (as a failed claim returns it)."""
        owner = item.get("owner")
        return str(owner) if owner is not None else None

    @off_loop
    def owner(self, name: str) -> str | None:
        claim = self._claim(name)
        return self.owner_of_claim(claim) if claim else None

    @off_loop
    def release(self, name: str) -> bool:
        """Forget who owns the name (whatever its case); False if nobody did."""
        released = False
        for key in (self._name_key(name), self._legacy_key(name)):
            if key is None:
                continue
            old = self._client.delete_item(
                TableName=self.table, Key=key, ReturnValues="ALL_OLD"
            ).get("Attributes")
            if old is not None:
                released = True
                self._disown(self.owner_of_claim(decode(old)), name)
        return released

    @off_loop
    def release_alias(self, name: str, alias_of: str) -> bool:
        """Forget the claim of `name` if it is an alias of `alias_of`; False otherwise."""
        try:
            old = self._client.delete_item(
                TableName=self.table,
                Key=self._name_key(name),
                ConditionExpression="aliasOf = :target",
                ExpressionAttributeValues=values(target=alias_of),
                ReturnValues="ALL_OLD",
            ).get("Attributes")
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            return False
        self._disown(self.owner_of_claim(decode(old or {})), name)
        return True
