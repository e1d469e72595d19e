"""Sessions of the relay's own web pages (the console) in DynamoDB (table `keys`).

pk `page#<SHA-256 of the session id>`, sk `session`: the page family the session is valid
for, the key that opened it (its id, and the hash of the credential it logged in with),
when it was opened and `expiresAt` (DynamoDB TTL on AWS; reads ignore expired items,
moto applies no TTL). The session id itself is never stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from natrelay.store._dynamo import Item, decode, encode, off_loop

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@dataclass(frozen=True)
class PageSessionRecord:
    digest: str  # the SHA-256 of the session id
    family: str
    key_id: str
    credential: str
    created_at: float
    expires_at: float


class DynamoPageSessionStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self.table = table

    @staticmethod
    def _key(digest: str) -> dict[str, Any]:
        return {"pk": {"S": f"page#{digest}"}, "sk": {"S": "session"}}

    @off_loop
    def put(self, record: PageSessionRecord) -> None:
        item: Item = {
            "pk": f"page#{record.digest}",
            "sk": "session",
            "family": record.family,
            "keyId": record.key_id,
            "credential": record.credential,
            "createdAt": record.created_at,
            "expiresAt": int(record.expires_at),
        }
        self._client.put_item(TableName=self.table, Item=encode(item))

    @off_loop
    def get(self, digest: str, now: float) -> PageSessionRecord | None:
        """The session, or None if there is none or it has expired."""
        raw = self._client.get_item(
            TableName=self.table, Key=self._key(digest), ConsistentRead=True
        ).get("Item")
        item = decode(raw) if raw else None
        if item is None or item["expiresAt"] <= now:
            return None
        return PageSessionRecord(
            digest=digest,
            family=item["family"],
            key_id=item["keyId"],
            credential=item["credential"],
            created_at=item["createdAt"],
            expires_at=item["expiresAt"],
        )

    @off_loop
    def delete(self, digest: str) -> None:
        self._client.delete_item(TableName=self.table, Key=self._key(digest))
