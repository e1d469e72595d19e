"""What one member of a pool serves, as the relay learns it: an endpoint its backend
answered 404 or 405 for is taken off its list (its next registration declares it again)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from natrelay.store._dynamo import condition, off_loop, values
from natrelay.store.errors import ConditionFailedError
from natrelay.store.llms import DynamoLlmStore, member_attr

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DynamoMemberStore:
    def __init__(self, client: DynamoDBClient, rows: DynamoLlmStore) -> None:
        self._client = client
        self.table = rows.table

    @off_loop
    def drop_endpoint(
        self, name: str, session_id: str, served: frozenset[str], endpoint: str
    ) -> bool:
        """The member serves `served` (what the caller read of it) less `endpoint` from
        now on; False if it no longer lists `endpoint` (or left the pool): nothing
        written."""
        remaining = sorted(served - {endpoint})
        try:
            with condition(f"the member of {name} no longer lists {endpoint}"):
                self._client.update_item(
                    TableName=self.table,
                    Key={"name": {"S": name}},
                    UpdateExpression="SET #me.endpoints = :remaining",
                    ConditionExpression="contains(#me.endpoints, :endpoint)",
                    ExpressionAttributeNames={"#me": member_attr(session_id)},
                    ExpressionAttributeValues=values(remaining=remaining, endpoint=endpoint),
                )
        except ConditionFailedError:
            return False
        return True
