"""What the console's views read and show, on moto: each row's hours (totals, latency
histograms, legs) and what the usage and latency pages make of them; the DynamoDB
requests each page view makes (docs/operations.md states them); the charts' SVG."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from natrelay.service import Relay
from natrelay.service.access import Principal
from natrelay.service.row_stats import Sample, bucket, bucket_ms, percentile
from natrelay.web.console import charts
from natrelay.wire import HeartbeatRequest, KeySpec, Role
from tests.server.conftest import (
    CHAT,
    CLIENT,
    PUB,
    FakeClock,
    OpCounter,
    claim,
    register,
    spec,
)

pytestmark = pytest.mark.anyio

DAY = 86400


def test_a_bucket_holds_its_durations_within_nine_percent() -> None:
    for ms in (0.5, 10, 10.1, 37, 100, 999, 1234.5, 60_000, 3_600_000):
        middle = bucket_ms(bucket(ms))
        assert ms <= 10 or abs(middle - ms) / ms <= 0.095, (ms, middle)
    assert [bucket(ms) for ms in (1, 10, 11.8, 12, 20, 40)] == [0, 0, 1, 2, 4, 8]


def test_percentiles_from_a_histogram() -> None:
    durations = [100.0] * 50 + [1000.0] * 45 + [5000.0] * 5
    histogram: dict[int, int] = {}
    for ms in durations:
        histogram[bucket(ms)] = histogram.get(bucket(ms), 0) + 1
    assert percentile(histogram, 0.5) == pytest.approx(100, rel=0.1)
    assert percentile(histogram, 0.95) == pytest.approx(1000, rel=0.1)
    assert percentile(histogram, 0.96) == pytest.approx(5000, rel=0.1)
    assert percentile({}, 0.5) is None


async def _count(relay: Relay, llm: str, **kw: Any) -> None:
    await relay.row_stats.count(Sample(llm, **kw))


async def test_the_hours_hold_totals_histograms_and_legs(relay: Relay, clock: FakeClock) -> None:
    clock.now = 1_800_000_000.0 - 1_800_000_000.0 % 3600 + 60  # one minute into an hour
    legs = {"relay": 2.0, "queue": 30.0, "dispatch": 8.0, "backend": 200.0}
    for whole in (240.0, 250.0, 260.0, 2600.0):
        await _count(relay, "a", error=False, prompt=10, completion=5, whole_ms=whole, legs=legs)
    await _count(relay, "a", error=True)  # refused: counted, no timeline
    await relay.row_stats.flush()
    labels, rows = await relay.history.latency(24)
    [row] = rows
    hour = row.hours[-1]
    assert labels[-1] == hour.hour and hour.requests == 5
    p50, p95 = hour.whole
    assert p50 == pytest.approx(250, rel=0.1) and p95 == pytest.approx(2600, rel=0.1)
    assert hour.first_token == (None, None)  # no stream among them
    assert hour.legs == pytest.approx({**legs, "wake": 0.0})  # averaged over the timed ones
    assert all(h.requests == 0 for h in row.hours[:-1])

    clock.advance(DAY)  # a day later the 30-day usage still has them, on their day
    usage = await relay.history.usage_days(30)
    [model] = usage.by_row
    assert model.name == "a"
    assert (model.requests[-2], model.tokens[-2], model.errors[-2]) == (5, 60, 1)
    assert model.requests[-1] == 0 and sum(usage.today_requests) == 0
    assert len(usage.days) == 30 and usage.days[-1] > usage.days[-2]


async def test_usage_by_key_matches_the_keys_usage(relay: Relay) -> None:
    key, _ = await relay.keys.create(KeySpec(role=Role.CLIENT, label="bob"))
    principal = Principal(key_id=key.id, role=Role.CLIENT)
    admission = await relay.usage.admit(principal, "t1", relay.clock() + 60)
    body = {"usage": {"prompt_tokens": 7, "completion_tokens": 3}}
    await relay.usage.record_call(principal, admission, "a", body=body, error=False)
    await relay.usage.drain()
    usage = await relay.history.usage_days(7)
    [bob] = usage.by_key
    assert bob.name == f"bob ({key.id})"
    days = await relay.usage.days(key.id, 7)
    assert bob.requests[-1] == days[-1].requests == 1
    assert bob.tokens[-1] == days[-1].prompt_tokens + days[-1].completion_tokens == 10


async def test_what_a_page_view_reads(relay: Relay, client: Any) -> None:
    """The DynamoDB requests of each view, as docs/operations.md states them: with R rows
    and K keys (stored keys, and the simple mode's shared tokens)."""
    await register(relay, spec("a"), spec("b"), spec("c"))
    for name in ("a", "b", "c"):
        await _count(relay, name, error=False, whole_ms=100.0)
    await relay.row_stats.flush()
    k = len(await relay.keys.all()) + 3  # the shared tokens' usage is read too
    counter = OpCounter(client)

    await relay.board.rows()
    await relay.board.keys_today()
    # a scan of the rows; per row its hours (one Query) and its queue (one Query); per
    # live member (one session serves all three) its session; one Query of the keys, one
    # per key of its day
    assert sorted(counter.ops) == sorted(["Scan", "GetItem"] + ["Query"] * (3 * 2 + 1 + k))
    counter.ops.clear()

    # the rows counted (a Query) and the keys (a Query); per key and per row a Query
    await relay.history.usage_days(30)
    assert counter.ops == ["Query"] * (2 + k + 3)
    counter.ops.clear()

    await relay.history.latency(24)
    assert counter.ops == ["Query"] * (1 + 3)


async def test_the_overview_shows_what_each_member_runs(relay: Relay) -> None:
    sid = await register(relay, spec("a"), spec("b"))
    [state, _] = await relay.board.rows()
    assert state.running == {sid: None}  # it has not said yet
    tasks = [await relay.queue.submit(CLIENT, "a", CHAT, stream=False) for _ in range(2)]
    await claim(relay, sid)
    beat = HeartbeatRequest(provider_session_id=sid, running=[t.id for t in tasks])
    await relay.sessions.heartbeat(PUB, beat)
    a, b = await relay.board.rows()
    assert a.running == b.running == {sid: 2}  # one publisher: its tasks of every row


def test_a_chart_is_svg_with_a_table_of_its_numbers() -> None:
    html = charts.bars(
        "c1",
        "Requests per day by key",
        ["05-01", "05-02", "05-03"],
        [charts.Series("alice", [3, 0, 12]), charts.Series("bob", [1, None, 2])],
        corner="day",
    )
    figure = ET.fromstring(html)  # well-formed: a figure, its SVG, legend and table
    svg = figure.find(".//{http://www.w3.org/2000/svg}svg")
    assert svg is not None and svg.get("role") == "img"
    assert svg.get("aria-labelledby") == "c1-t c1-d"
    columns = svg.findall("{http://www.w3.org/2000/svg}g")
    assert [c.get("tabindex") for c in columns] == ["0"] * 3
    assert columns[2].get("aria-label") == "05-03: 14 in all; alice 12; bob 2"
    rows = figure.findall(".//table/tbody/tr")
    cells = [[c.text for c in r] for r in rows]
    assert cells == [["05-01", "3", "1"], ["05-02", "0", "—"], ["05-03", "12", "2"]]
    assert figure.find(".//table/thead/tr/th").text == "day"  # type: ignore[union-attr]


def test_axes_are_whole_numbers_for_counts() -> None:
    html = charts.bars("c2", "Errors", ["a", "b"], [charts.Series("x", [0, 1])])
    ticks = [t.text for t in ET.fromstring(html).iter("{http://www.w3.org/2000/svg}text")]
    numbers = [t for t in ticks if t and t.isdigit()]
    assert numbers == sorted(set(numbers), key=int) and all(int(n) == float(n) for n in numbers)
    assert not math.isnan(float(numbers[-1]))
