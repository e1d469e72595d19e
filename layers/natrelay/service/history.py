"""What the console's charts show over time: usage per day by key and by row (model),
today's requests per hour, and each row's latency per hour with its legs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from natrelay.service.access import STATIC_IDS
from natrelay.service.context import Context
from natrelay.service.row_stats import RowStats, hour_of, percentile
from natrelay.service.timeline import LEGS
from natrelay.service.usage import Usage
from natrelay.store import RowHour, UsageRecord


@dataclass(frozen=True)
class Daily:
    """Requests, tokens and errors of one key or row, per day (the same order as the
    history's `days`)."""

    name: str
    requests: list[int]
    tokens: list[int]
    errors: list[int]

    @property
    def total(self) -> int:
        return sum(self.requests)


@dataclass(frozen=True)
class UsageHistory:
    days: list[str]
    by_key: list[Daily]
    by_row: list[Daily]
    # Today (UTC) by hour, every row added up: "00".."23", requests and errors.
    hours: list[str]
    today_requests: list[int]
    today_errors: list[int]


@dataclass(frozen=True)
class HourLatency:
    hour: str
    requests: int
    first_token: tuple[float | None, float | None]  # p50, p95 (ms)
    whole: tuple[float | None, float | None]
    # Each leg's average over the requests with a timeline (ms), by LEGS name.
    legs: dict[str, float]


@dataclass(frozen=True)
class RowLatency:
    name: str
    hours: list[HourLatency]


def _day_list(now: float, days: int) -> list[str]:
    today = datetime.fromtimestamp(now, UTC)
    return [(today - timedelta(days=days - 1 - i)).strftime("%Y-%m-%d") for i in range(days)]


def _key_daily(name: str, records: list[UsageRecord], days: list[str]) -> Daily:
    by_day = {r.day: r for r in records}
    empty = UsageRecord(key_id="", day="")
    got = [by_day.get(d, empty) for d in days]
    return Daily(
        name,
        [r.requests for r in got],
        [r.prompt_tokens + r.completion_tokens for r in got],
        [r.errors for r in got],
    )


def _row_daily(name: str, per_day: dict[str, RowHour], days: list[str]) -> Daily:
    got = [per_day.get(d, RowHour()) for d in days]
    return Daily(
        name,
        [h.requests for h in got],
        [h.prompt + h.completion for h in got],
        [h.errors for h in got],
    )


def hour_latency(hour: RowHour) -> HourLatency:
    timed = hour.timed or 0
    return HourLatency(
        hour=hour.hour,
        requests=hour.requests,
        first_token=(percentile(hour.first_token, 0.5), percentile(hour.first_token, 0.95)),
        whole=(percentile(hour.whole, 0.5), percentile(hour.whole, 0.95)),
        legs={leg: hour.legs.get(leg, 0.0) / timed for leg in LEGS} if timed else {},
    )


class History:
    def __init__(self, ctx: Context, usage: Usage, rows: RowStats) -> None:
        self.stores = ctx.stores
        self.clock = ctx.clock
        self.usage = usage
        self.rows = rows

    async def usage_days(self, days: int) -> UsageHistory:
        """The last `days` UTC days: the rows counted then (gone ones too) and the keys (a
        Query each), then one Query per key and one per row, side by side."""
        await self.rows.flush()  # what this process counted, first
        now = self.clock()
        labels = _day_list(now, days)
        span = (days - 1) * 24 + int(hour_of(now)[11:]) + 1  # from the first day's 00h
        names, keys = await asyncio.gather(self.rows.names(span), self.stores.keys.all())
        ids = {k.id: k.label for k in keys}
        ids.update({key_id: f"shared {role.value} token" for role, key_id in STATIC_IDS.items()})
        key_days, row_hours = await asyncio.gather(
            asyncio.gather(*(self.usage.days(i, days) for i in ids)),
            self.rows.hours(names, span, totals_only=True),
        )
        by_key = [
            _key_daily(f"{label} ({key_id})", records, labels)
            for (key_id, label), records in zip(ids.items(), key_days, strict=True)
            if records
        ]
        by_row = [_row_daily(n, per_day(row_hours[n]), labels) for n in names]
        today = labels[-1]
        hours = [f"{h:02d}" for h in range(24)]  # the hours to come are empty
        summed = {h: RowHour() for h in hours}
        for hour_list in row_hours.values():
            for hour in hour_list:
                if hour.hour.startswith(today):
                    summed[hour.hour[11:]].add(hour)
        return UsageHistory(
            days=labels,
            by_key=sorted(by_key, key=lambda d: -d.total),
            by_row=sorted([d for d in by_row if d.total], key=lambda d: -d.total),
            hours=hours,
            today_requests=[summed[h].requests for h in hours],
            today_errors=[summed[h].errors for h in hours],
        )

    async def latency(self, hours: int) -> tuple[list[str], list[RowLatency]]:
        """Each row's last `hours` hours (labels `YYYY-MM-DDTHH`, oldest first): the rows
        counted then (a Query), and one Query per row, side by side."""
        await self.rows.flush()
        now = self.clock()
        labels = [hour_of(now - (hours - 1 - i) * 3600) for i in range(hours)]
        names = await self.rows.names(hours)
        found = await self.rows.hours(names, hours)
        out = []
        for name in names:
            by_hour = {h.hour: h for h in found[name]}
            if any(h.requests for h in by_hour.values()):
                out.append(
                    RowLatency(
                        name, [hour_latency(by_hour.get(h, RowHour(hour=h))) for h in labels]
                    )
                )
        return labels, out


def per_day(hours: list[RowHour]) -> dict[str, RowHour]:
    out: dict[str, RowHour] = {}
    for hour in hours:
        out.setdefault(hour.hour[:10], RowHour(hour=hour.hour[:10])).add(hour)
    return out
