"""DynamoDB plumbing shared by the stores: item codec, condition fragments, errors."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import anyio.to_thread
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError

from natrelay.store._aws import aws_client
from natrelay.store.errors import ConditionFailedError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

Item = dict[str, Any]
S = TypeVar("S")
P = ParamSpec("P")
R = TypeVar("R")

# Named condition fragments (Powertools style); combined with AND / OR at call sites.
NOT_EXISTS = "attribute_not_exists(#pk)"
STATE_IS = "#state = :state"
# A pool task any member may claim, or one targeted at this session (a wake).
FOR_SESSION = "(attribute_not_exists(targetSession) OR targetSession = :sid)"
# A task no member is preferred for, this one, or one whose preferred member's time ran
# out (affinity: service.affinity).
PREFERS_SESSION = "(attribute_not_exists(prefer) OR prefer = :sid OR preferUntil < :now)"
CLAIMED_BY = "claimedBy = :sid AND claimedKey = :key"
LEASE_EXPIRED = "leaseUntil < :now"
NOTHING_SENT = "attribute_not_exists(sentAny)"
SESSION_IS = "sessionId = :sid"
STATUS_IS = "#status = :status"
HEARTBEAT_BEFORE = "lastHeartbeatAt < :cutoff"
WAKE_FREE = "(attribute_not_exists(wakeId) OR wakeDeadline < :now)"
WAKE_IS = "wakeId = :wake"
NOT_EXPIRED = "(attribute_not_exists(expiresAt) OR expiresAt > :now)"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def off_loop(
    fn: Callable[Concatenate[S, P], R],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """Make a blocking store method awaitable: boto3 runs in a worker thread."""

    async def run(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await anyio.to_thread.run_sync(functools.partial(fn, self, *args, **kwargs))

    run.__name__, run.__qualname__, run.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    return run


THROTTLED = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)


def put_all(client: Any, table: str, rows: list[Item]) -> None:
    """Write `rows` (plain items, unconditionally) with BatchWriteItem, 25 a call, until
    DynamoDB has taken every one (what it leaves unprocessed is sent again)."""
    for start in range(0, len(rows), 25):
        pending: dict[str, Any] = {
            table: [{"PutRequest": {"Item": encode(row)}} for row in rows[start : start + 25]]
        }
        while pending:
            out = client.batch_write_item(RequestItems=pending)
            pending = out.get("UnprocessedItems") or {}


def make_client(
    endpoint_url: str | None, region: str, on_throttle: Callable[[str], None] | None = None
) -> DynamoDBClient:
    """A DynamoDB client; `on_throttle(operation)` hears of every throttled call."""
    config = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=64)
    client: DynamoDBClient = aws_client(
        "dynamodb", endpoint_url=endpoint_url, region_name=region, config=config
    )
    if on_throttle is not None:
        hook = on_throttle

        def seen(parsed: dict[str, Any], model: Any, **_: Any) -> None:
            if parsed.get("Error", {}).get("Code") in THROTTLED:
                hook(model.name)

        client.meta.events.register("after-call.dynamodb", seen)
    return client


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(round(value, 6)))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    if isinstance(value, set):
        return {_from_dynamo(v) for v in value}
    if hasattr(value, "value") and isinstance(value.value, bytes):  # boto3 Binary
        return bytes(value.value)
    return value


def encode(item: Item) -> dict[str, Any]:
    """A Python dict (None values dropped) as a DynamoDB attribute map."""
    return {k: _serializer.serialize(_to_dynamo(v)) for k, v in item.items() if v is not None}


def decode(raw: Any) -> Item:
    return {k: _from_dynamo(_deserializer.deserialize(v)) for k, v in raw.items()}


def values(**kwargs: Any) -> dict[str, Any]:
    """ExpressionAttributeValues from keyword arguments (`now=1.0` -> `:now`)."""
    return {f":{k}": _serializer.serialize(_to_dynamo(v)) for k, v in kwargs.items()}


def is_condition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


@contextmanager
def condition(message: str, record: Callable[[Item], object] | None = None) -> Iterator[None]:
    """Turn a lost conditional write into ConditionFailedError carrying the old item,
    decoded by `record` (when the write asked for ReturnValuesOnConditionCheckFailure)."""
    try:
        yield
    except ClientError as exc:
        if not is_condition_failure(exc):
            raise
        old_raw = exc.response.get("Item")
        old = record(decode(old_raw)) if old_raw and record is not None else None
        raise ConditionFailedError(message, record=old) from exc


def items(client: Any, operation: str, **kwargs: Any) -> Iterator[Item]:
    """Every item of a query or scan (`operation`), decoded, through boto3's paginator."""
    for page in client.get_paginator(operation).paginate(**kwargs):
        for raw in page.get("Items", []):
            yield decode(raw)


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]
