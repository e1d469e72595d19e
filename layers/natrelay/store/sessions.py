"""Publisher sessions in DynamoDB: one item per session in the tasks table
(pk `session#<id>`, sk `m`) holding its names, their statuses, its heartbeat and
generation, so a heartbeat needs no index read, and the tasks the relay cancelled for
its next beat to take (`cancelled`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from natrelay.store._dynamo import Item, condition, decode, off_loop, values
from natrelay.store.agents import AgentWrite, DynamoAgentStore
from natrelay.store.errors import ConditionFailedError
from natrelay.store.keys import DynamoKeyStore
from natrelay.store.llms import DynamoLlmStore, row_record
from natrelay.store.records import LlmRecord, SessionRecord
from natrelay.wire import LlmStatus, ProviderSpec

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_EXISTS = "attribute_exists(pk)"
# Takes the marks of mark_cancelled: with ReturnValues UPDATED_OLD, the write that
# clears them returns them (the set DynamoDB removed, so none is taken twice).
_TAKE = " REMOVE cancelled"


def _taken(answer: Any) -> list[str]:
    """The task ids an update that took the cancel marks removed."""
    old = answer.get("Attributes", {}).get("cancelled", {})
    return sorted(old.get("SS", ()))


def session_record(item: Item) -> SessionRecord:
    return SessionRecord(
        id=item["pk"].removeprefix("session#"),
        names=tuple(sorted(item.get("names") or ())),
        agents=tuple(sorted(item.get("agents") or ())),
        statuses={k: LlmStatus(v) for k, v in (item.get("statuses") or {}).items()},
        heartbeat_at=item.get("heartbeatAt", 0.0),
        generation=int(item.get("generation", 0)),
        owner=item.get("owner"),
        running=frozenset(item.get("running") or ()),
        confirmed_at=item.get("confirmedAt"),
        doorbell=item.get("doorbell"),
        work_beats=bool(item.get("workBeats", False)),
    )


class NameHeldError(ConditionFailedError):
    """A registration lost on a name: `record` is the row (if it lost there), `owner`
    the key that owns the name (if it lost on the name's owner)."""

    def __init__(self, name: str, *, record: object | None, owner: str | None) -> None:
        super().__init__(f"name {name} is held", record=record)
        self.name = name
        self.owner = owner


class NamesFullError(ConditionFailedError):
    """A registration would make its key own more names than its cap."""


class DynamoSessionStore:
    """Sessions: register (with their rows and names, atomically), read, touch, delete."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        rows: DynamoLlmStore,
        keys: DynamoKeyStore,
        agents: DynamoAgentStore,
    ) -> None:
        self._agents = agents
        self._client = client
        self.table = table
        self._rows = rows
        self._keys = keys

    def _key(self, session_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"session#{session_id}"}, "sk": {"S": "m"}}

    @off_loop
    def register(
        self,
        session_id: str,
        owner: str,
        specs: list[ProviderSpec],
        *,
        now: float,
        expires_at: float,
        new_names: int = 0,
        max_names: int | None = None,
        work_beats: bool = False,
        agents: tuple[AgentWrite, ...] = (),
    ) -> tuple[SessionRecord, list[LlmRecord]]:
        """Claim the names, create the rows or join their pools, and write the session
        for `owner`, all or nothing. With `max_names`, also add the names to those the
        key owns, `new_names` of them new to it.

        A name another key owns (in any case) fails the whole registration with
        NameHeldError; more names than `max_names`, with NamesFullError; a session id
        another key owns, with ConditionFailedError (`record` None).
        """
        ops: list[dict[str, Any]] = []
        rows: list[Item] = []
        # The names claimed, in the order of their ops: each provider's, its aliases, then
        # the agents'. The rows' ops and the agents' follow in the same order.
        claimed = [s.name for s in specs] + [a for s in specs for a in s.aliases]
        claimed += [a.name for a in agents]
        for name, held_by in self._keys.legacy_owners(claimed).items():
            if held_by != owner:
                raise NameHeldError(name, record=None, owner=held_by)
        for spec in specs:
            ops.append(self._keys.name_claim_op(spec.name, owner, now))
        for spec in specs:
            ops.extend(
                self._keys.name_claim_op(alias, owner, now, alias_of=spec.name)
                for alias in spec.aliases
            )
        ops.extend(self._keys.name_claim_op(a.name, owner, now) for a in agents)
        for spec in specs:
            op, row = self._rows.join_op(spec, session_id, owner, now)
            ops.append(op)
            rows.append(row)
        ops.extend(self._agents.join_op(a, session_id, owner, now) for a in agents)
        ops.append(
            {
                "Update": {
                    "TableName": self.table,
                    "Key": self._key(session_id),
                    "UpdateExpression": "SET #names = :names, statuses = :statuses, "
                    "heartbeatAt = :now, expiresAt = :exp, #owner = :owner, workBeats = :work"
                    + (", agents = :agents" if agents else "")
                    + " ADD generation :one"
                    + ("" if agents else " REMOVE agents"),
                    "ConditionExpression": "attribute_not_exists(pk) OR #owner = :owner",
                    "ExpressionAttributeNames": {"#names": "names", "#owner": "owner"},
                    "ExpressionAttributeValues": values(
                        names={s.name for s in specs},
                        statuses={s.name: s.initial_status.value for s in specs},
                        now=now,
                        exp=int(expires_at),
                        owner=owner,
                        one=1,
                        work=work_beats,
                        **({"agents": {a.name for a in agents}} if agents else {}),
                    ),
                }
            }
        )
        if max_names is not None and new_names:
            ops.append(self._keys.owned_op(owner, set(claimed), new_names, max_names))
        try:
            self._client.transact_write_items(TransactItems=ops)  # type: ignore[arg-type]
        except ClientError as exc:
            reasons = exc.response.get("CancellationReasons", [])
            failed = [r.get("Code") == "ConditionalCheckFailed" for r in reasons]
            # the rows' ops, then the agents'
            n, c = len(specs) + len(agents), len(claimed)
            joined = [s.name for s in specs] + [a.name for a in agents]
            for i, name in enumerate(claimed):
                if i < len(failed) and failed[i]:
                    old = decode(reasons[i].get("Item") or {})
                    raise NameHeldError(
                        name, record=None, owner=self._keys.owner_of_claim(old)
                    ) from exc
            for i, name in enumerate(joined):
                if c + i < len(failed) and failed[c + i]:
                    held = reasons[c + i].get("Item")
                    raise NameHeldError(
                        name,
                        record=row_record(decode(held)) if held else None,
                        owner=None,
                    ) from exc
            if len(failed) > c + n and failed[c + n]:
                raise ConditionFailedError(f"session {session_id} has another owner") from exc
            if len(failed) > c + n + 1 and failed[c + n + 1]:
                raise NamesFullError(f"key {owner} owns {max_names} names") from exc
            raise
        session = self._get(session_id)
        assert session is not None  # just written
        return session, [row_record(r) for r in rows]

    def _get(self, session_id: str) -> SessionRecord | None:
        raw = self._client.get_item(
            TableName=self.table, Key=self._key(session_id), ConsistentRead=True
        ).get("Item")
        return session_record(decode(raw)) if raw else None

    @off_loop
    def get(self, session_id: str) -> SessionRecord | None:
        return self._get(session_id)

    @off_loop
    def touch(
        self,
        session_id: str,
        reported: dict[str, LlmStatus],
        now: float,
        expires_at: float,
        running: list[str] | None = None,
        *,
        take_cancelled: bool = False,
    ) -> list[str]:
        """Record a heartbeat, the statuses the publisher reported (only those: a status
        the relay recorded since the caller read the session stays) and, if it says,
        the tasks it runs; ConditionFailedError if the session is gone. With
        `take_cancelled`, takes the tasks marked cancelled (mark_cancelled) and returns
        them, in the same write."""
        names = {f"#s{i}": name for i, name in enumerate(reported)}
        sets = ["heartbeatAt = :now", "expiresAt = :exp"]
        sets += [f"statuses.{ref} = :s{i}" for i, ref in enumerate(names)]
        vals: dict[str, Any] = {f"s{i}": s.value for i, s in enumerate(reported.values())}
        if running is not None:
            sets += ["running = :running", "confirmedAt = :now"]
            vals["running"] = list(running)
        with condition(f"session {session_id} is gone"):
            answer = self._client.update_item(
                TableName=self.table,
                Key=self._key(session_id),
                UpdateExpression="SET " + ", ".join(sets) + (_TAKE if take_cancelled else ""),
                ConditionExpression=_EXISTS,
                **({"ExpressionAttributeNames": names} if names else {}),  # type: ignore[arg-type]
                ExpressionAttributeValues=values(now=now, exp=int(expires_at), **vals),
                **({"ReturnValues": "UPDATED_OLD"} if take_cancelled else {}),  # type: ignore[arg-type]
            )
        return _taken(answer)

    @off_loop
    def work_beat(
        self, session_id: str, owner: str, now: float, expires_at: float, running: list[str]
    ) -> list[str]:
        """A work beat: the session lives and runs `running`, in one write (its rows and
        statuses untouched) that also takes the tasks marked cancelled (mark_cancelled)
        and returns them; ConditionFailedError if it is gone or another key's (then
        nothing is taken)."""
        with condition(f"session {session_id} is gone"):
            answer = self._client.update_item(
                TableName=self.table,
                Key=self._key(session_id),
                UpdateExpression="SET heartbeatAt = :now, expiresAt = :exp, running = :running, "
                "confirmedAt = :now" + _TAKE,
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues=values(
                    now=now, exp=int(expires_at), running=list(running), owner=owner
                ),
                ReturnValues="UPDATED_OLD",
            )
        return _taken(answer)

    @off_loop
    def mark_cancelled(self, session_id: str, task_ids: list[str]) -> None:
        """Mark tasks of the session as no longer wanted, for its next work beat or
        heartbeat to take (one write, no read); ConditionFailedError if it is gone."""
        with condition(f"session {session_id} is gone"):
            self._client.update_item(
                TableName=self.table,
                Key=self._key(session_id),
                UpdateExpression="ADD cancelled :ids",
                ConditionExpression=_EXISTS,
                ExpressionAttributeValues=values(ids=set(task_ids)),
            )

    @off_loop
    def record_status(self, session_id: str, name: str, status: LlmStatus) -> None:
        """Record on the session item (not the row) a status the publisher established,
        e.g. after a wake; ConditionFailedError if the session is gone."""
        with condition(f"session {session_id} is gone"):
            self._client.update_item(
                TableName=self.table,
                Key=self._key(session_id),
                UpdateExpression="SET statuses.#n = :status",
                ConditionExpression=_EXISTS,
                ExpressionAttributeNames={"#n": name},
                ExpressionAttributeValues=values(status=status.value),
            )

    @off_loop
    def delete(self, session_id: str) -> None:
        self._client.delete_item(TableName=self.table, Key=self._key(session_id))
