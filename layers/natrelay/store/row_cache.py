"""A brief in-process cache of LLM rows, for the client's path in long-lived mode.

Every write this process sends to the LLMs table (any operation of any store, seen
through botocore's parameter hook) empties it, so a row this process changed is never
served stale; a write by another process shows within `ttl` seconds. A read that
started before a write never fills the cache with what it read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from natrelay.store.records import LlmRecord

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})


def _tables(operation: str, params: dict[str, Any]) -> set[str]:
    if operation == "TransactWriteItems":
        return {
            op["TableName"]
            for item in params.get("TransactItems", [])
            for op in item.values()
            if isinstance(op, dict) and "TableName" in op
        }
    if operation == "BatchWriteItem":
        return set(params.get("RequestItems", {}))
    return {params.get("TableName", "")}


class RowCache:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._rows: dict[str, tuple[float, LlmRecord | None]] = {}
        # Bumped by every write: a read that began under an older version is not kept.
        self.version = 0

    def watch(self, client: DynamoDBClient, table: str) -> None:
        """Empty the cache whenever `client` is about to write to `table`."""

        def before(params: dict[str, Any], model: Any, **_: Any) -> None:
            if model.name in _WRITES and table in _tables(model.name, params):
                self.clear()

        client.meta.events.register("before-parameter-build.dynamodb", before)

    def clear(self) -> None:
        self.version += 1
        self._rows.clear()

    def get(self, name: str) -> tuple[bool, LlmRecord | None]:
        """(found, row): found is False when the cache holds nothing fresh for `name`."""
        hit = self._rows.get(name)
        if hit is None or self._clock() - hit[0] > self.ttl:
            return False, None
        return True, hit[1]

    def put(self, name: str, row: LlmRecord | None, version: int) -> None:
        """Keep what a read that began at `version` found, unless a write came since."""
        if version == self.version:
            self._rows[name] = (self._clock(), row)
