"""Counting DynamoDB requests through botocore's event hooks, with timings and task events.

Used by the server tests (which operations a call makes), in the benchmark's API processes
(tests/perf/counting_api.py) and in its sweeper; never in the relay's own code: it only
registers handlers on a boto3 client.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from typing import Any

from natrelay_infra.tables import index_keys

# The tables' global secondary indexes and their key attributes: a write that sets or
# removes one of them also writes that index, which DynamoDB bills too.
INDEX_KEYS = index_keys()
READS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}
MAX_EVENTS = 20_000


def _table_kind(table: str) -> str:
    """`llms` or `tasks`: test and bench tables are named `<prefix>Llms`, `<prefix>Tasks`."""
    return "llms" if table.endswith("Llms") else "tasks"


def _size_kb(value: Any) -> int:
    """Approximate item size in whole KB (DynamoDB bills writes per started KB)."""
    return max(1, -(-len(json.dumps(value, default=str)) // 1024))


def _touched_indexes(table: str, names: set[str]) -> int:
    return sum(1 for keys in INDEX_KEYS[_table_kind(table)].values() if keys & names)


def _expression_names(params: dict[str, Any]) -> set[str]:
    """Attribute names an UpdateItem sets or removes (placeholders resolved)."""
    expression = params.get("UpdateExpression", "")
    aliases = params.get("ExpressionAttributeNames") or {}
    names: set[str] = set()
    for token in expression.replace(",", " ").replace("=", " ").split():
        name = token.split(".")[0]
        names.add(aliases.get(name, name))
    return names


def capacity(op: str, params: dict[str, Any]) -> tuple[float, float]:
    """(read units, write units) an on-demand table would bill, estimated from the request.

    Reads: 1 per strongly consistent read of up to 4 KB, 0.5 eventually consistent (all
    index queries). Writes: 1 per started KB of the item, plus 1 per index whose key the
    write sets or removes; transactions bill twice. Sizes here are small (bench prompts),
    so the per-KB part is almost always 1.
    """
    if op in ("GetItem", "Scan"):
        return (1.0 if params.get("ConsistentRead") else 0.5), 0.0
    if op == "Query":
        return (0.5 if params.get("IndexName") else 1.0), 0.0
    if op == "PutItem":
        item = params.get("Item", {})
        return 0.0, _size_kb(item) + _touched_indexes(params.get("TableName", ""), set(item))
    if op == "UpdateItem":
        names = _expression_names(params)
        return 0.0, 1 + _touched_indexes(params.get("TableName", ""), names)
    if op == "DeleteItem":
        return 0.0, 1.0 + len(INDEX_KEYS[_table_kind(params.get("TableName", ""))])
    if op == "TransactWriteItems":
        units = 0.0
        for entry in params.get("TransactItems", []):
            (kind, body), *_ = entry.items()
            units += (
                2
                * capacity(kind.replace("Put", "PutItem").replace("Update", "UpdateItem"), body)[1]
            )
        return 0.0, units
    if op == "BatchWriteItem":
        units = 0.0
        for table, requests in params.get("RequestItems", {}).items():
            for request in requests:
                put = request.get("PutRequest")
                units += capacity("PutItem", {"TableName": table, **put})[1] if put else 1
        return 0.0, units
    return 0.0, 0.0


def _task_id(params: dict[str, Any]) -> str | None:
    key = params.get("Key") or params.get("Item") or {}
    pk = key.get("pk", {}).get("S", "")
    return pk.removeprefix("task#") if pk.startswith("task#") else None


class OpCounter:
    """DynamoDB operations of boto3 clients: in order, counts, units, round-trip times, events.

    `ops` lists the operations sent, in order. Events (wall-clock seconds, comparable
    across processes on one machine): `put` when an infer task item was written (after
    its PutItem returned), `wake_put` the same for a wake task, `claim` and `complete`
    when the claim's or the result's UpdateItem returned.
    """

    def __init__(self, *clients: Any) -> None:
        self._lock = threading.Lock()
        self.reset()
        for client in clients:
            self.attach(client)

    def count(self, op: str) -> int:
        return self.ops.count(op)

    def reset(self) -> None:
        with self._lock:
            self.ops: list[str] = []
            self.counts: Counter[str] = Counter()
            self.seconds: defaultdict[str, float] = defaultdict(float)
            self.samples: defaultdict[str, list[float]] = defaultdict(list)
            self.rru = 0.0
            self.wru = 0.0
            self.events: dict[str, dict[str, float]] = {
                "put": {},
                "claim": {},
                "complete": {},
                "wake_put": {},
            }
            self.started = time.time()

    def attach(self, client: Any) -> None:
        events = client.meta.events
        events.register("before-parameter-build.dynamodb", self._params)
        events.register("before-call.dynamodb", self._before)
        events.register("after-call.dynamodb", self._after)

    def _params(
        self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        op = model.name
        rru, wru = capacity(op, params)
        note: str | None = None
        task_id = _task_id(params)
        if task_id and op == "PutItem" and params["Item"].get("sk", {}).get("S") == "m":
            kind = params["Item"].get("kind", {}).get("S")
            note = "put" if kind == "infer" else "wake_put"
        elif task_id and op == "UpdateItem":
            expression = params.get("UpdateExpression", "")
            if ":claimed," in expression:
                note = "claim"
            elif "resultHash = :resultHash" in expression:
                note = "complete"
        context["_bench"] = (op, note, task_id)
        with self._lock:
            self.counts[op] += 1
            self.rru += rru
            self.wru += wru

    def _before(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        with self._lock:
            self.ops.append(model.name)
        context["_bench_t0"] = time.perf_counter()

    def _after(self, context: dict[str, Any], **_: Any) -> None:
        op, note, task_id = context.get("_bench", ("?", None, None))
        elapsed = time.perf_counter() - context.get("_bench_t0", time.perf_counter())
        now = time.time()
        with self._lock:
            self.seconds[op] += elapsed
            if len(self.samples[op]) < MAX_EVENTS:
                self.samples[op].append(elapsed)
            if note and task_id and len(self.events[note]) < MAX_EVENTS:
                self.events[note].setdefault(task_id, now)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "since": self.started,
                "now": time.time(),
                "ops": dict(self.counts),
                "seconds": dict(self.seconds),
                "samples": {k: list(v) for k, v in self.samples.items()},
                "rru": self.rru,
                "wru": self.wru,
                "events": {k: dict(v) for k, v in self.events.items()},
            }
