"""The quiet heartbeat: a session and its rows refreshed in one request, without reading.

A poll that knows its session (this process saw the same generation) refreshes the
heartbeat with one TransactWriteItems: every row's `lastHeartbeatAt` (and sweep keys)
and the session's `heartbeatAt`. It leaves statuses alone and is conditioned on what
the caller believes, so a stale belief fails it and the caller takes the long way (read
the session, then the ordinary heartbeat): a pool the session left, a row the sweep
marked inactive (the long way restores its status), a re-registered session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from natrelay.store._dynamo import off_loop, values
from natrelay.store.errors import ConditionFailedError
from natrelay.store.llms import LIVE, member_attr
from natrelay.wire import LlmStatus

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Rows and session in one transaction: at most 100 items.
MAX_QUIET_ROWS = 99


class DynamoBeatStore:
    def __init__(self, client: DynamoDBClient, llms_table: str, tasks_table: str) -> None:
        self._client = client
        self.llms_table = llms_table
        self.tasks_table = tasks_table

    @off_loop
    def beat_quietly(
        self,
        session_id: str,
        *,
        owner: str,
        generation: int,
        names: tuple[str, ...],
        now: float,
        expires_at: float,
        running: list[str] | None = None,
    ) -> None:
        """Refresh the heartbeat of the session and its rows in one request.

        ConditionFailedError if any belief is stale (or the write met another one).
        """
        if len(names) > MAX_QUIET_ROWS:
            raise ConditionFailedError("too many rows for one transaction")
        ops: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self.llms_table,
                    "Key": {"name": {"S": name}},
                    "UpdateExpression": "SET #me.heartbeatAt = :now, lastHeartbeatAt = :now, "
                    "sweepState = :live, sweepAt = :now",
                    "ConditionExpression": "attribute_exists(#me) AND #status <> :inactive",
                    "ExpressionAttributeNames": {
                        "#status": "status",
                        "#me": member_attr(session_id),
                    },
                    "ExpressionAttributeValues": values(
                        now=now, live=LIVE, inactive=LlmStatus.INACTIVE.value
                    ),
                }
            }
            for name in names
        ]
        ops.append(
            {
                "Update": {
                    "TableName": self.tasks_table,
                    "Key": {"pk": {"S": f"session#{session_id}"}, "sk": {"S": "m"}},
                    "UpdateExpression": "SET heartbeatAt = :now, expiresAt = :exp"
                    + (", running = :running, confirmedAt = :now" if running is not None else ""),
                    "ConditionExpression": "#owner = :owner AND generation = :gen",
                    "ExpressionAttributeNames": {"#owner": "owner"},
                    "ExpressionAttributeValues": values(
                        now=now,
                        exp=int(expires_at),
                        owner=owner,
                        gen=generation,
                        **({"running": running} if running is not None else {}),
                    ),
                }
            }
        )
        try:
            self._client.transact_write_items(TransactItems=ops)  # type: ignore[arg-type]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("TransactionCanceledException", "TransactionConflictException"):
                raise ConditionFailedError(f"quiet heartbeat refused: {code}") from exc
            raise
