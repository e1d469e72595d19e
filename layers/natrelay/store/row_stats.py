"""Each row's requests per hour in DynamoDB (table `keys`): what the overview's "last
hour" and the console's usage and latency charts read.

pk `llmusage#<name>`, sk `<YYYY-MM-DDTHH>` (UTC): one item per row and hour, kept 30 days
(`expiresAt`), holding

* `r<MM>` / `e<MM>`: the requests and errors of each minute (the last 60 minutes);
* `req`, `err`, `pt`, `ct`: the hour's requests, errors, prompt and completion tokens;
* `fb`: requests of the row that a fallback served (counted on the row asked for);
* `f<NN>` / `w<NN>`: how many requests took bucket NN's time to their first token / to
  their whole answer (the buckets are the service's: service.row_stats);
* `timed`, `ms_<leg>`: how many requests had a timeline, and the sum of each leg's ms.

Written with one UpdateItem (ADD) per request, or per row and flush in a long-lived
process; read with one Query per row (the hours since a given one).

pk `llmusage-names`, sk `<name>`: the rows counted, and the last hour each was (`hour`),
so that the charts show rows that are gone (deleted, or swept after their retention)
with one Query. Written once per row and hour by each process.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from natrelay.store._dynamo import Item, items, off_loop, values

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# The hour's totals, by attribute: what the 30-day charts read (ProjectionExpression).
_TOTALS = {
    "req": "requests",
    "err": "errors",
    "pt": "prompt",
    "ct": "completion",
    "fb": "fallbacks",
}
_HISTOGRAMS = {"f": "first_token", "w": "whole"}
_NAMES = "llmusage-names"


@dataclass
class RowHour:
    """What a row did in one hour (or what to add to it)."""

    hour: str = ""
    requests: int = 0
    errors: int = 0
    prompt: int = 0
    completion: int = 0
    fallbacks: int = 0
    # minute (MM) -> [requests, errors]
    minutes: dict[str, list[int]] = field(default_factory=dict)
    # bucket -> requests (time to first token; to the whole answer)
    first_token: Counter[int] = field(default_factory=Counter)
    whole: Counter[int] = field(default_factory=Counter)
    # requests with a timeline, and each leg's sum over them (ms)
    timed: int = 0
    legs: dict[str, float] = field(default_factory=dict)

    def add(self, other: RowHour) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.prompt += other.prompt
        self.completion += other.completion
        self.fallbacks += other.fallbacks
        for minute, (r, e) in other.minutes.items():
            mine = self.minutes.setdefault(minute, [0, 0])
            mine[0] += r
            mine[1] += e
        self.first_token.update(other.first_token)
        self.whole.update(other.whole)
        self.timed += other.timed
        for leg, ms in other.legs.items():
            self.legs[leg] = self.legs.get(leg, 0.0) + ms


def _row_hour(item: Item) -> RowHour:
    out = RowHour(hour=item["sk"])
    for attr, value in item.items():
        tag, rest = attr[:1], attr[1:]
        if attr in _TOTALS:
            setattr(out, _TOTALS[attr], int(value))
        elif tag in "re" and len(rest) == 2 and rest.isdigit():
            out.minutes.setdefault(rest, [0, 0])["re".index(tag)] = int(value)
        elif tag in _HISTOGRAMS and rest.isdigit():
            getattr(out, _HISTOGRAMS[tag])[int(rest)] = int(value)
        elif attr.startswith("ms_"):
            out.legs[attr[3:]] = float(value)
        elif attr == "timed":
            out.timed = int(value)
    if "req" not in item:  # an hour counted before the totals were: its minutes
        out.requests = sum(r for r, _ in out.minutes.values())
        out.errors = sum(e for _, e in out.minutes.values())
    return out


def _adds(counts: RowHour) -> dict[str, int | float]:
    """The attributes to add for `counts`, by name (zeros left out)."""
    adds: dict[str, int | float] = {}
    for attr, name in _TOTALS.items():
        adds[attr] = getattr(counts, name)
    for minute, (r, e) in counts.minutes.items():
        adds[f"r{minute}"] = r
        adds[f"e{minute}"] = e
    for tag, name in _HISTOGRAMS.items():
        for bucket, n in getattr(counts, name).items():
            adds[f"{tag}{bucket:02d}"] = n
    adds["timed"] = counts.timed
    for leg, ms in counts.legs.items():
        adds[f"ms_{leg}"] = round(ms, 1)
    return {k: v for k, v in adds.items() if v}


class DynamoRowStatsStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self.table = table

    @off_loop
    def add(self, name: str, counts: RowHour, *, expires_at: float) -> None:
        """Add `counts` to the row's item of `counts.hour`, in one write."""
        adds = _adds(counts)
        if not adds:
            return
        names = {f"#a{i}": attr for i, attr in enumerate(adds)}
        vals = {f"a{i}": n for i, n in enumerate(adds.values())}
        self._client.update_item(
            TableName=self.table,
            Key={"pk": {"S": f"llmusage#{name}"}, "sk": {"S": counts.hour}},
            UpdateExpression="ADD "
            + ", ".join(f"{alias} :{alias[1:]}" for alias in names)
            + " SET expiresAt = :exp",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values(exp=int(expires_at), **vals),
        )

    @off_loop
    def mark(self, name: str, hour: str, *, expires_at: float) -> None:
        """Note that the row was counted in `hour`."""
        self._client.update_item(
            TableName=self.table,
            Key={"pk": {"S": _NAMES}, "sk": {"S": name}},
            UpdateExpression="SET #hour = :hour, expiresAt = :exp",
            ExpressionAttributeNames={"#hour": "hour"},
            ExpressionAttributeValues=values(hour=hour, exp=int(expires_at)),
        )

    @off_loop
    def names(self, since: str) -> list[str]:
        """The rows counted in `since` (YYYY-MM-DDTHH) or later, by name (one Query)."""
        found = items(
            self._client,
            "query",
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues=values(pk=_NAMES),
        )
        return sorted(i["sk"] for i in found if i.get("hour", "") >= since)

    @off_loop
    def hours(self, name: str, since: str, *, totals_only: bool = False) -> list[RowHour]:
        """The row's hours from `since` (YYYY-MM-DDTHH) on, oldest first (one Query,
        eventually consistent; `totals_only`: the hour's totals, without minutes,
        histograms or legs)."""
        query: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND sk >= :since",
            "ExpressionAttributeValues": values(pk=f"llmusage#{name}", since=since),
        }
        if totals_only:
            wanted = ["sk", *_TOTALS]
            query["ProjectionExpression"] = ", ".join(f"#p{i}" for i in range(len(wanted)))
            query["ExpressionAttributeNames"] = {f"#p{i}": a for i, a in enumerate(wanted)}
        return [_row_hour(i) for i in items(self._client, "query", **query)]
