"""Doorbell bindings in DynamoDB: which WebSocket connection rings which session.

A binding is written where ringing reads it, so that a ring costs no extra read: the
connection id goes on the session's member entry of every pool it serves
(`m#<session>.doorbell` on the row; `submit` reads the row anyway) and on the session
item. `$disconnect` names only the connection, so one more item, pk
`doorbell#<connection id>`, sk `m` in the tasks table, says which session and rows it
was bound to. Every unbind is conditioned on the connection still being the one bound
(`doorbell = :cid`): a publisher that opened its next connection before closing the
old one keeps the new binding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from natrelay.store._dynamo import condition, decode, off_loop, values
from natrelay.store.errors import ConditionFailedError
from natrelay.store.llms import member_attr

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DynamoDoorbellStore:
    """Bind and unbind doorbell connections. Nothing here raises for a binding that
    lost a race: a row another session took, or a connection already replaced."""

    def __init__(self, client: DynamoDBClient, llms_table: str, tasks_table: str) -> None:
        self._client = client
        self.llms_table = llms_table
        self.tasks_table = tasks_table

    def _connection_key(self, connection_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"doorbell#{connection_id}"}, "sk": {"S": "m"}}

    def _session_key(self, session_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"session#{session_id}"}, "sk": {"S": "m"}}

    @off_loop
    def bind(
        self,
        connection_id: str,
        session_id: str,
        owner: str,
        names: tuple[str, ...],
        expires_at: float,
    ) -> list[str]:
        """Ring this connection for the session and the rows it still holds; returns
        the names bound. ConditionFailedError if the session is gone or not `owner`'s."""
        # First what $disconnect needs to undo it all, so no binding is left unfindable.
        item: dict[str, Any] = {
            **self._connection_key(connection_id),
            "sessionId": {"S": session_id},
            "expiresAt": {"N": str(int(expires_at))},
        }
        if names:
            item["names"] = {"SS": list(names)}
        self._client.put_item(TableName=self.tasks_table, Item=item)
        with condition("the session is gone"):
            self._client.update_item(
                TableName=self.tasks_table,
                Key=self._session_key(session_id),
                UpdateExpression="SET doorbell = :cid",
                ConditionExpression="attribute_exists(pk) AND #owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues=values(cid=connection_id, owner=owner),
            )
        bound: list[str] = []
        for name in names:
            try:
                with condition(f"the session left the pool of {name}"):
                    self._client.update_item(
                        TableName=self.llms_table,
                        Key={"name": {"S": name}},
                        UpdateExpression="SET #me.doorbell = :cid",
                        ConditionExpression="attribute_exists(#me)",
                        ExpressionAttributeNames={"#me": member_attr(session_id)},
                        ExpressionAttributeValues=values(cid=connection_id),
                    )
            except ConditionFailedError:
                continue
            bound.append(name)
        return bound

    @off_loop
    def unbind(
        self, connection_id: str, rows: tuple[str, ...] = (), session_id: str | None = None
    ) -> str | None:
        """Stop ringing this connection: on what it was bound to, and on `rows` of
        `session_id` (a member found ringing a gone connection) in any case. Returns
        the session whose doorbell it still was (None: none, or it had a newer one)."""
        raw = self._client.get_item(
            TableName=self.tasks_table, Key=self._connection_key(connection_id), ConsistentRead=True
        ).get("Item")
        item = decode(raw) if raw else {}
        session = item.get("sessionId") or session_id
        names = {*rows, *(item.get("names") or ())}
        current: str | None = None
        targets: list[tuple[str, dict[str, Any], str]] = []
        if session:
            me = member_attr(session)
            targets = [(self.llms_table, {"name": {"S": n}}, me) for n in sorted(names)]
            targets.append((self.tasks_table, self._session_key(session), ""))
        for table, key, member in targets:
            # a member's binding is in its entry on the row; the session's on its item
            path = "#me.doorbell" if member else "#bell"
            try:
                with condition("bound to another connection"):
                    self._client.update_item(
                        TableName=table,
                        Key=key,
                        UpdateExpression=f"REMOVE {path}",
                        ConditionExpression=f"{path} = :cid",
                        ExpressionAttributeNames={"#me": member}
                        if member
                        else {"#bell": "doorbell"},
                        ExpressionAttributeValues=values(cid=connection_id),
                    )
            except ConditionFailedError:
                continue
            if not member:
                current = session
        if raw:
            self._client.delete_item(
                TableName=self.tasks_table, Key=self._connection_key(connection_id)
            )
        return current
