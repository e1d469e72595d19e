"""From raw measurements to per-inference numbers, the cost model, targets and markdown."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.perf.load import ms, percentile

# --- AWS on-demand prices (us-east-1), used only in `cost_model` -------------------------
# Lambda, arm64: $0.0000133334 per GB-second (first 7.5 billion GB-s a month) and $0.20
# per million requests. The template gives every function 512 MB.
LAMBDA_ARM_GB_SECOND = 0.0000133334
LAMBDA_PER_REQUEST = 0.20 / 1e6
LAMBDA_MEMORY_GB = 0.5
# DynamoDB on-demand: $0.625 per million write request units, $0.125 per million read
# request units (the prices since the November 2024 reduction).
DYNAMODB_PER_WRU = 0.625 / 1e6
DYNAMODB_PER_RRU = 0.125 / 1e6
# API Gateway HTTP API: $1.00 per million requests (first 300 million a month). Not
# Lambda or DynamoDB, but every poll and result post passes through it: listed apart.
APIGW_PER_REQUEST = 1.00 / 1e6
MINUTES_PER_MONTH = 730 * 60  # AWS bills a month as 730 hours
# API Gateway WebSocket APIs (the doorbell): $1.00 per million messages, billed in 32 KB
# units (a ring, a ping or a pong is one), and $0.25 per million connection-minutes.
WS_PER_MESSAGE = 1.00 / 1e6
WS_PER_CONNECTION_MINUTE = 0.25 / 1e6
# The template's PollFunction (long-polls) has 128 MB (PollMemorySize); DoorbellFunction
# ($connect / $disconnect) 256 MB, assumed 100 ms per event (not measured: no Lambda here).
POLL_MEMORY_GB = 0.125
DOORBELL_MEMORY_GB = 0.25
DOORBELL_EVENT_SECONDS = 0.1
# The publisher's doorbell defaults: a new connection every 6600 s (maxConnectionSeconds),
# a ping and its pong every 300 s (keepaliveSeconds).
CONNECTION_MINUTES = 6600 / 60
SAFETY_POLLS_PER_MINUTE = 1.0
KEEPALIVE_MESSAGES_PER_MINUTE = 2 / 5

# Lambda SnapStart for Python (off by default; the template's SnapStart parameter): each
# published version's snapshot is cached at $0.0000015046 per GB-second of the function's
# memory (billed for at least 3 hours), and each restore costs $0.0001397998 per GB.
SNAPSTART_CACHE_PER_GB_SECOND = 0.0000015046
SNAPSTART_RESTORE_PER_GB = 0.0001397998
SECONDS_PER_MONTH = MINUTES_PER_MONTH * 60

PRICES = {
    "lambdaArm64PerGbSecond": LAMBDA_ARM_GB_SECOND,
    "lambdaPerRequest": LAMBDA_PER_REQUEST,
    "lambdaMemoryGb": LAMBDA_MEMORY_GB,
    "dynamodbPerWriteUnit": DYNAMODB_PER_WRU,
    "dynamodbPerReadUnit": DYNAMODB_PER_RRU,
    "apiGatewayHttpPerRequest": APIGW_PER_REQUEST,
    "webSocketPerMessage": WS_PER_MESSAGE,
    "webSocketPerConnectionMinute": WS_PER_CONNECTION_MINUTE,
    "pollMemoryGb": POLL_MEMORY_GB,
    "minutesPerMonth": MINUTES_PER_MONTH,
    "snapStartCachePerGbSecond": SNAPSTART_CACHE_PER_GB_SECOND,
    "snapStartRestorePerGb": SNAPSTART_RESTORE_PER_GB,
}

READ_OPS = ("GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems")


def merge_stats(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the counters of several API processes (events and deliveries are merged)."""
    ops: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    samples: dict[str, list[float]] = {}
    requests: Counter[str] = Counter()
    request_seconds: Counter[str] = Counter()
    busy: Counter[str] = Counter()
    events: dict[str, dict[str, float]] = {}
    delivered: dict[str, float] = {}
    chats: dict[str, list[float]] = {}
    rru = wru = 0.0
    for s in stats:
        ops.update(s["ops"])
        seconds.update(s["seconds"])
        for op, values in s.get("samples", {}).items():
            samples.setdefault(op, []).extend(values)
        requests.update(s["requests"])
        request_seconds.update(s["requestSeconds"])
        busy.update(s.get("busySeconds", {}))
        rru += s["rru"]
        wru += s["wru"]
        for kind, values in s["events"].items():
            events.setdefault(kind, {}).update(values)
        delivered.update(s["delivered"])
        chats.update(s.get("chats", {}))
    return {
        "ops": dict(ops),
        "seconds": dict(seconds),
        "samples": samples,
        "requests": dict(requests),
        "requestSeconds": dict(request_seconds),
        "busySeconds": dict(busy),
        "rru": rru,
        "wru": wru,
        "events": events,
        "delivered": delivered,
        "chats": chats,
    }


def per_inference(stats: dict[str, Any], n: int) -> dict[str, Any]:
    """DynamoDB requests (by operation) and capacity units per completed inference."""
    if not n:
        return {"n": 0}
    ops = stats["ops"]
    total = sum(ops.values())
    return {
        "n": n,
        "requests": round(total / n, 2),
        "reads": round(sum(v for k, v in ops.items() if k in READ_OPS) / n, 2),
        "writes": round(sum(v for k, v in ops.items() if k not in READ_OPS) / n, 2),
        "byOperation": {k: round(v / n, 2) for k, v in sorted(ops.items())},
        "readUnits": round(stats["rru"] / n, 2),
        "writeUnits": round(stats["wru"] / n, 2),
        "apiRequests": {k: round(v / n, 2) for k, v in sorted(stats["requests"].items())},
        "apiSeconds": round(sum(stats["busySeconds"].values()) / n, 4),
        "apiSecondsNoPoll": round(
            sum(v for k, v in stats["busySeconds"].items() if k != "poll") / n, 4
        ),
        "dynamodbMsPerCall": {
            k: round(1000 * stats["seconds"].get(k, 0) / v, 2) for k, v in sorted(ops.items())
        },
        "dynamodbP50MsPerCall": {
            k: ms(percentile(v, 50)) for k, v in sorted(stats["samples"].items())
        },
    }


def dispatch(stats: dict[str, Any]) -> dict[str, Any]:
    """Task written (PutItem returned) -> the poll answer carrying it left the API."""
    puts = stats["events"].get("put", {})
    delivered = stats["delivered"]
    gaps = [delivered[t] - puts[t] for t in puts if t in delivered]
    claims = stats["events"].get("claim", {})
    claim_gaps = [claims[t] - puts[t] for t in puts if t in claims]
    return {
        "n": len(gaps),
        "p50": ms(percentile(gaps, 50)),
        "p99": ms(percentile(gaps, 99)),
        "claimP50": ms(percentile(claim_gaps, 50)),
    }


def timeline(stats: dict[str, Any], started: list[float], finished: list[float]) -> dict[str, Any]:
    """Where the time of one sequential inference goes (p50 of each leg, wall clock ms).

    submit: client sent → task written; dispatch: → the poll answer carrying it left the
    API; publisher: → the result written (publisher to backend and back, result POST and
    its UpdateItem); pickup: → the client had the answer. Sequential requests only.
    """
    events = stats["events"]
    puts = sorted(events.get("put", {}).items(), key=lambda kv: kv[1])
    if not puts or len(puts) != len(started):
        return {}
    legs: dict[str, list[float]] = {"submit": [], "dispatch": [], "publisher": [], "pickup": []}
    for (task_id, put), began, ended in zip(puts, sorted(started), sorted(finished), strict=True):
        sent = stats["delivered"].get(task_id)
        done = events.get("complete", {}).get(task_id)
        if sent is None or done is None:
            continue
        legs["submit"].append(put - began)
        legs["dispatch"].append(sent - put)
        legs["publisher"].append(done - sent)
        legs["pickup"].append(ended - done)
    return {"n": len(legs["submit"]), **{k: ms(percentile(v, 50)) for k, v in legs.items()}}


LEGS = ("instance", "submit", "dispatch", "publisher", "pickup")


def legs(stats: dict[str, Any]) -> dict[str, Any]:
    """Where the time of each inference goes, per task (p50 of each leg, ms), at any load.

    From the relay's side (`chats`: the task each chat request wrote): instance: reached
    the relay → the app had it (the Lambda pool's hop, a wait for a free or a cold
    instance); submit: → task written; dispatch: → the poll or claim answer carrying it
    left the API; publisher: → the result written; pickup: → the answer left the API.
    """
    events = stats["events"]
    out: dict[str, list[float]] = {leg: [] for leg in LEGS}
    total: list[float] = []
    for task_id, (arrived, got, answered) in stats.get("chats", {}).items():
        put = events.get("put", {}).get(task_id)
        sent = stats["delivered"].get(task_id)
        done = events.get("complete", {}).get(task_id)
        if put is None or sent is None or done is None:
            continue
        for leg, value in zip(
            LEGS, (got - arrived, put - got, sent - put, done - sent, answered - done), strict=True
        ):
            out[leg].append(value)
        total.append(answered - arrived)
    return {
        "n": len(total),
        **{leg: ms(percentile(values, 50)) for leg, values in out.items()},
        "total": ms(percentile(total, 50)),
    }


def result_pickup(stats: dict[str, Any], finished_at: list[float]) -> dict[str, Any]:
    """Result written (the complete UpdateItem returned) -> the client had its answer.

    Valid for sequential requests only: the i-th completion is the i-th answer.
    """
    completes = sorted(stats["events"].get("complete", {}).values())
    gaps = [end - done for done, end in zip(completes, sorted(finished_at), strict=False)]
    gaps = [g for g in gaps if g >= 0]
    return {"n": len(gaps), "p50": ms(percentile(gaps, 50)), "p99": ms(percentile(gaps, 99))}


def idle_rates(stats: dict[str, Any], seconds: float, *, doorbell: bool = False) -> dict[str, Any]:
    """Per-minute rates of an idle stack (API processes).

    With a doorbell, what an idle publisher does is its safety polls (the `claim`
    requests): the rates are scaled to one a minute, the default `safetyPollSeconds`,
    from however many the window saw (the benchmark polls faster to see several).
    """
    polls = stats["requests"].get("claim", 0)
    minutes = seconds / 60
    if doorbell and polls:
        minutes = polls / SAFETY_POLLS_PER_MINUTE
    ops = stats["ops"]
    per_minute = round(sum(ops.values()) / minutes, 2)
    return {
        "windowSeconds": round(seconds, 1),
        "doorbell": doorbell,
        "safetyPollsSeen": polls,
        "dynamodbPerMinute": per_minute,
        "dynamodbWithConnectionPerMinute": per_minute,
        "byOperation": {k: round(v / minutes, 1) for k, v in sorted(ops.items())},
        "readUnitsPerMinute": round(stats["rru"] / minutes, 2),
        "writeUnitsPerMinute": round(stats["wru"] / minutes, 2),
        "apiRequestsPerMinute": round(sum(stats["requests"].values()) / minutes, 2),
        "apiRequestsByKind": {k: round(v / minutes, 2) for k, v in stats["requests"].items()},
        "apiSecondsPerMinute": round(sum(stats["busySeconds"].values()) / minutes, 1),
        "apiSecondsByKind": {k: round(v / minutes, 3) for k, v in stats["busySeconds"].items()},
    }


def connection_costs(rates: dict[str, Any], gateway: dict[str, Any]) -> dict[str, Any]:
    """Add what a doorbell connection costs, spread over its life, to idle `rates`.

    `gateway`: the stand-in's counts once the publisher closed its connection, so its
    DynamoDB requests are one $connect and one $disconnect (and any reconnect in between).
    Each new connection is also followed by one poll (a Query).
    """
    connects = max(1, int(gateway.get("connects", 1)))
    ops = gateway.get("dynamodb", {})
    per_connection = sum(ops.values()) / connects + 1
    rates["connection"] = {
        "connects": connects,
        "dynamodbPerConnection": round(per_connection, 2),
        "byOperation": ops,
        "readUnitsPerConnection": round(gateway.get("rru", 0) / connects + 0.5, 2),
        "writeUnitsPerConnection": round(gateway.get("wru", 0) / connects, 2),
        "pingsSeen": gateway.get("pings", 0),
    }
    rates["dynamodbWithConnectionPerMinute"] = round(
        rates["dynamodbPerMinute"] + per_connection / CONNECTION_MINUTES, 2
    )
    return rates


def idle_month(
    idle: dict[str, Any], *, lambda_mode: bool = True, poll_memory_gb: float = POLL_MEMORY_GB
) -> dict[str, float]:
    """Dollars per idle publisher-month from its per-minute rates.

    Long-polls run on PollFunction (`poll_memory_gb`), everything else on the API's
    512 MB. A doorbell adds its connection-minutes, keep-alive messages and, spread over
    each connection's 110 minutes, the $connect / $disconnect invocations and requests.
    """
    per_month = MINUTES_PER_MONTH
    rru, wru = idle["readUnitsPerMinute"], idle["writeUnitsPerMinute"]
    connection = idle.get("connection")
    ws = 0.0
    doorbell_lambda = 0.0
    if connection:
        rru += connection["readUnitsPerConnection"] / CONNECTION_MINUTES
        wru += connection["writeUnitsPerConnection"] / CONNECTION_MINUTES
        ws = (WS_PER_CONNECTION_MINUTE + KEEPALIVE_MESSAGES_PER_MINUTE * WS_PER_MESSAGE) * per_month
        events = 2 / CONNECTION_MINUTES * per_month
        doorbell_lambda = events * (
            DOORBELL_EVENT_SECONDS * DOORBELL_MEMORY_GB * LAMBDA_ARM_GB_SECOND + LAMBDA_PER_REQUEST
        )
    dynamo = (rru * DYNAMODB_PER_RRU + wru * DYNAMODB_PER_WRU) * per_month
    invocations = idle["apiRequestsPerMinute"] * per_month
    by_kind = idle.get("apiSecondsByKind") or {"api": idle["apiSecondsPerMinute"]}
    gb_seconds = sum(
        seconds * (poll_memory_gb if kind == "poll" else LAMBDA_MEMORY_GB)
        for kind, seconds in by_kind.items()
    )
    lam = (
        gb_seconds * per_month * LAMBDA_ARM_GB_SECOND
        + invocations * LAMBDA_PER_REQUEST
        + doorbell_lambda
    )
    apigw = invocations * APIGW_PER_REQUEST
    total = dynamo + (lam + apigw + ws if lambda_mode else 0.0)
    return {
        "dynamodb": round(dynamo, 3),
        "lambda": round(lam, 3),
        "apiGateway": round(apigw, 3),
        "webSocket": round(ws, 3),
        "total": round(total, 3),
    }


def million_inferences(per: dict[str, Any], *, doorbell: bool = False) -> dict[str, float]:
    """Dollars per million inferences (instant backend) from per-inference numbers.

    Lambda time excludes the publisher's long-poll, which runs whether or not there is
    work (it is the idle cost); every API request is an invocation and an API Gateway
    request, polls and claims included (a poll that returns a task is followed by a new
    one). With the doorbell every inference also sends one ring (a WebSocket message).
    """
    dynamo = (per["readUnits"] * DYNAMODB_PER_RRU + per["writeUnits"] * DYNAMODB_PER_WRU) * 1e6
    invocations = sum(per["apiRequests"].values())
    lam = (
        per["apiSecondsNoPoll"] * LAMBDA_MEMORY_GB * LAMBDA_ARM_GB_SECOND
        + invocations * LAMBDA_PER_REQUEST
    ) * 1e6
    apigw = invocations * APIGW_PER_REQUEST * 1e6
    ws = WS_PER_MESSAGE * 1e6 if doorbell else 0.0
    return {
        "dynamodb": round(dynamo, 2),
        "lambda": round(lam, 2),
        "apiGateway": round(apigw, 2),
        "webSocket": round(ws, 2),
        "total": round(dynamo + lam + apigw + ws, 2),
        "lambdaPerSecondOfGeneration": round(LAMBDA_MEMORY_GB * LAMBDA_ARM_GB_SECOND * 1e6, 2),
    }


def snapstart(memory_gb: float) -> dict[str, float]:
    """SnapStart's own price for one function: a month of one version's cached snapshot,
    and a thousand restores (each cold start is one)."""
    return {
        "memoryGb": memory_gb,
        "cacheMonth": round(memory_gb * SNAPSTART_CACHE_PER_GB_SECOND * SECONDS_PER_MONTH, 2),
        "perThousandRestores": round(memory_gb * SNAPSTART_RESTORE_PER_GB * 1000, 3),
    }


# --- markdown ----------------------------------------------------------------------------


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_f(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


TARGET_LABELS = {
    "direct": "direct (floor)",
    "litellm": "LiteLLM proxy",
    "longlived": "natrelay long-lived",
    "lambda": "natrelay Lambda mode, doorbell",
    "lambda-longpoll": "natrelay Lambda mode, long-poll",
    "lambda-2proc": "natrelay Lambda mode, doorbell, 2 processes as every instance (before)",
}
LEG_LABELS = {
    "instance": "reached relay → app has it",
    "submit": "→ task written",
    "dispatch": "→ claim answer sent",
    "publisher": "→ result written",
    "pickup": "→ answer leaves API",
}


def markdown(r: dict[str, Any]) -> str:
    out: list[str] = []
    meta = r["meta"]
    out.append(
        f"Run {meta['date']} on commit `{meta['commit']}`"
        f"{' (+ uncommitted changes)' if meta.get('dirty') else ''}, "
        f"`{meta['command']}`, {meta['durationSeconds']:.0f} s. "
        f"Machine: {meta['machine']['cpus']} CPUs ({meta['machine']['cpu']}), "
        f"Python {meta['machine']['python']}, load average before the run "
        f"{meta['machine']['loadBefore']}."
    )
    for note in meta.get("notes") or []:
        out.append(f"\nNote: {note}.")
    lat = r["latency"]
    added = r["added"]
    rows = []
    for key, label in TARGET_LABELS.items():
        if key not in lat["c1"] and key not in lat["c16"]:
            continue
        c1, c16 = lat["c1"].get(key, {"n": 0}), lat["c16"].get(key, {})
        a1, a16 = added["c1"].get(key, {}), added["c16"].get(key, {})
        rows.append(
            [
                label,
                f"{_f(c1.get('p50'))} / {_f(c1.get('p95'))} / {_f(c1.get('p99'))}",
                f"{_f(a1.get('p50'))} / {_f(a1.get('p95'))} / {_f(a1.get('p99'))}",
                f"{_f(c16.get('p50'))} / {_f(c16.get('p95'))} / {_f(c16.get('p99'))}",
                f"{_f(a16.get('p50'))} / {_f(a16.get('p95'))} / {_f(a16.get('p99'))}",
                c16.get("throughput"),
                f"{c1['n']} + {c16.get('n')}",
                _errors(c1, c16),
            ]
        )
    out.append("\n**Non-streaming latency, ms (p50 / p95 / p99); added = minus direct**\n")
    out.append(
        _table(
            [
                "path",
                "c=1",
                "added c=1",
                "c=16",
                "added c=16",
                "req/s at c=16",
                "requests",
                "errors",
            ],
            rows,
        )
    )
    rows = []
    for key, label in TARGET_LABELS.items():
        s = lat["stream"].get(key)
        if not s:
            continue
        a = added["stream"].get(key, {})
        rows.append(
            [
                label,
                f"{_f(s['p50'])} / {_f(s['p95'])} / {_f(s['p99'])}",
                _f(a.get("p50")),
                _f(s.get("totalP50")),
                s["n"],
                _errors(s),
            ]
        )
    st = meta["profile"]
    out.append(
        f"\n**Streaming, c=1: time to first token, ms** ({st['streamTokens']} tokens "
        f"{st['tokenIntervalMs']:g} ms apart, the first at once)\n"
    )
    out.append(
        _table(
            ["path", "TTFT p50 / p95 / p99", "added TTFT p50", "whole stream p50", "n", "errors"],
            rows,
        )
    )
    out.append("\n**DynamoDB requests per inference** (counted in the API processes)\n")
    rows = []
    for mode, phases in r["dynamodb"].items():
        for phase, per in phases.items():
            if not per.get("n"):
                continue
            by = ", ".join(f"{k} {v:g}" for k, v in per["byOperation"].items())
            rows.append(
                [
                    f"{TARGET_LABELS[mode]}, {phase}",
                    per["requests"],
                    f"{per['reads']:g} / {per['writes']:g}",
                    f"{per['readUnits']:g} / {per['writeUnits']:g}",
                    by,
                ]
            )
    out.append(
        _table(
            ["mode, load", "requests", "reads / writes", "RRU / WRU (est.)", "by operation"],
            rows,
        )
    )
    out.append(
        "\n**Idle publisher and dispatch** (one provider; isolated requests "
        f"{st['isolatedGap'][0]:g} to {st['isolatedGap'][1]:g} s apart)\n"
    )
    rows = []
    for name, k in r["knobs"].items():
        idle, d = k["idle"], k["dispatch"]
        rows.append(
            [
                name,
                "doorbell"
                if k["settings"].get("doorbell")
                else f"{k['settings'].get('poll_min_interval_seconds', 0.05):g} / "
                f"{k['settings'].get('poll_max_interval_seconds', 1.0):g}",
                f"{_f(d['p50'])} / {_f(d['p99'])} (n={d['n']})",
                _f(k["pickup"]["p50"]),
                f"{idle['dynamodbPerMinute']:g}"
                + (
                    f" ({idle['dynamodbWithConnectionPerMinute']:g} with reconnects)"
                    if idle.get("connection")
                    else ""
                ),
                idle["apiRequestsPerMinute"],
                idle["apiSecondsPerMinute"],
                f"${k['month']['total']:.2f} (DynamoDB ${k['month']['dynamodb']:.2f})"
                if not k["settings"]["in_process_signals"]
                else f"DynamoDB ${k['month']['dynamodb']:.2f} (API on your server)",
            ]
        )
    out.append(
        _table(
            [
                "stack",
                "doorbell, or poll min / max s",
                "dispatch p50 / p99 ms",
                "result→client p50 ms",
                "idle DynamoDB req/min",
                "idle API req/min",
                "idle API-s/min",
                "idle publisher-month",
            ],
            rows,
        )
    )
    busy = r.get("busyMember")
    if busy:
        b = busy["busyMember"]
        out.append(
            f"\nA busy member ({busy['running']} tasks running, Lambda mode, doorbell): "
            f"{b['dynamodbPerMinute']:g} DynamoDB req/min against "
            f"{busy['idleMember']['dynamodbPerMinute']:g} idle, "
            f"**+{busy['busyMemberExtraPerMinute']:g}** "
            f"({', '.join(f'{k} {v:g}' for k, v in b['byOperation'].items())}; "
            f"work beats: {b['apiRequestsByKind'].get('heartbeat', 0):g} a minute)."
        )
    d = r["dispatchUnderLoad"]
    out.append(
        "\nDispatch under load (c=1 back-to-back, task written → poll answer sent): "
        + "; ".join(
            f"{TARGET_LABELS[m]} p50 {_f(v['p50'])} ms, p99 {_f(v['p99'])} ms (n={v['n']})"
            for m, v in d.items()
        )
        + "."
    )
    tl = r.get("timeline") or {}
    if any(tl.values()):
        out.append(
            "\n**Where a c=1 non-streaming inference spends its time** (p50 per leg, ms; "
            "wall-clock stamps from the client and the API processes)\n"
        )
        out.append(
            _table(
                [
                    "mode",
                    "client → task written",
                    "→ poll answer sent",
                    "→ result written",
                    "→ client has it",
                    "n",
                ],
                [
                    [
                        TARGET_LABELS[m],
                        t["submit"],
                        t["dispatch"],
                        t["publisher"],
                        t["pickup"],
                        t["n"],
                    ]
                    for m, t in tl.items()
                    if t
                ],
            )
        )
    out += lambda_markdown(r)
    sweep = r.get("sweep")
    if sweep:
        out.append(
            f"\nSweeper (per deployment, once a minute): {sweep['requests']} DynamoDB requests "
            f"per run ({', '.join(f'{k} {v}' for k, v in sweep['ops'].items())}), "
            f"{sweep['seconds'] * 1000:.0f} ms per run here."
        )
    cost = r["cost"]
    out.append("\n**Cost model, AWS on-demand (us-east-1), dollars**\n")
    rows = []
    for label, key in (
        ("idle publisher-month, doorbell", "idleMonth"),
        ("idle publisher-month, long-poll (PollFunction 128 MB)", "idleMonthLongPoll"),
        ("per million inferences, instant backend, doorbell (c=1)", "millionInferences"),
        ("per million inferences, instant backend, long-poll (c=1)", "millionInferencesLongPoll"),
    ):
        c = cost.get(key) or {}
        if c:
            rows.append(
                [
                    label,
                    *(
                        f"{c.get(k, 0.0):.2f}"
                        for k in ("dynamodb", "lambda", "apiGateway", "webSocket", "total")
                    ),
                ]
            )
    out.append(
        _table(["what", "DynamoDB", "Lambda arm64", "API Gateway HTTP", "WebSocket", "total"], rows)
    )
    out.append(
        f"\nPlus ${cost['millionInferences']['lambdaPerSecondOfGeneration']:.2f} of Lambda per "
        "million inferences for every second the backend takes to answer (the client's "
        "request holds its Lambda while it waits)."
    )
    snap = cost.get("snapStart")
    if snap:
        out.append(
            "\nWith SnapStart on (the template's `SnapStart` parameter), per deployment: "
            + "; ".join(
                f"{name} ({v['memoryGb'] * 1024:.0f} MB) ${v['cacheMonth']:.2f} a month for its "
                f"cached snapshot and ${v['perThousandRestores']:.3f} per 1000 cold starts"
                for name, v in snap.items()
            )
            + "."
        )
    moto = r["moto"]
    out.append(
        "\nmoto's own cost per call (serialized server in its own process, from a plain boto3 "
        "client, while only the two idle publishers poll): "
        + ", ".join(f"{op} p50 {v['p50']} ms (p95 {v['p95']})" for op, v in moto.items())
        + "."
    )
    est = r.get("estimate")
    if est:
        out.append(
            f"\nEstimate, not a measurement: the {len(est['criticalOps'])} sequential DynamoDB "
            f"calls of a long-lived non-streaming inference ({', '.join(est['criticalOps'])}) "
            f"took {est['criticalMsHere']:.1f} ms here (sum of each operation's p50 as the API "
            f"saw it). At an assumed {est['assumedDynamoMs']:g} ms per call in-region, the "
            f"added p50 of {_f(est['measuredP50'])} ms would be about "
            f"{est['longlivedAddedP50']:.1f} ms."
        )
    wake = r.get("wake")
    if wake:
        out.append("\n**Wake: concurrent first requests on a hibernating row**\n")
        rows = [
            [
                TARGET_LABELS[m],
                w["requests"],
                w["ok"],
                w["wakeTasks"],
                _f(w["requestToBackendUpMs"]),
                _f(w["upToAllAnsweredMs"]),
                _f(w["firstRequestToAllAnsweredMs"]),
                w["dynamodbRequests"],
            ]
            for m, w in wake.items()
        ]
        out.append(
            _table(
                [
                    "mode",
                    "requests",
                    "answered 200",
                    "wake tasks written",
                    "first request → backend up, ms",
                    "backend up → all answered, ms",
                    "first request → all answered, ms",
                    "DynamoDB requests",
                ],
                rows,
            )
        )
    out.append("\n**Targets**\n")
    out.append(
        _table(
            ["target", "met", "measured"],
            [[t["target"], "yes" if t["met"] else "**no**", t["measured"]] for t in r["targets"]],
        )
    )
    return "\n".join(out) + "\n"


def lambda_markdown(r: dict[str, Any]) -> list[str]:
    """Lambda mode's own tables: legs per task, where the cores went at c=16, INIT, and
    the first request after idle."""
    out: list[str] = []
    legs = r.get("legs") or {}
    client = {k: r["latency"][k.replace("=", "")] for k in ("c=1", "c=16")}
    rows = [
        [
            f"{TARGET_LABELS[mode]}, {load}",
            *(t[leg] for leg in LEGS),
            t["total"],
            client[load].get(mode, {}).get("p50"),
            t["n"],
        ]
        for mode, loads in legs.items()
        for load, t in loads.items()
        if t.get("n")
    ]
    if rows:
        out.append(
            "\n**Lambda mode, per task** (p50 of each leg, ms, from the relay's stamps: the "
            "task each chat request wrote; the pool stamps when a request reached it)\n"
        )
        out.append(
            _table(["mode, load", *LEG_LABELS.values(), "relay total", "client p50", "n"], rows)
        )
    cores = (r.get("cpu") or {}).get("c16") or {}
    if cores:
        groups = sorted({g for per in cores.values() for g in per})
        out.append(
            f"\n**Where the {r['meta']['machine']['cpus']} cores went at c=16** (cores busy on "
            "average while each target ran: CPU seconds over its wall-clock seconds)\n"
        )
        out.append(
            _table(
                ["target", *groups, "all"],
                [
                    [
                        TARGET_LABELS.get(name, name),
                        *(_f(per.get(g, {}).get("cores"), 2) for g in groups),
                        _f(sum(v["cores"] for v in per.values()), 2),
                    ]
                    for name, per in cores.items()
                ],
            )
        )
    pools = r.get("pool") or {}
    if pools:
        out.append(
            "\nLambda pool at c=16, after the warm-up: "
            + "; ".join(
                f"{TARGET_LABELS.get(name, name)}: "
                + ", ".join(
                    f"round {i + 1}: {p['started']} instances started, {p['peakBusy']} busy "
                    f"at most, {p['waitedForInstance']} requests waited for one"
                    for i, p in enumerate(rounds)
                )
                for name, rounds in pools.items()
            )
            + "."
        )
    init = r.get("init") or {}
    if init:
        out.append(
            f"\n**Lambda INIT: import the handler and build its app, fresh interpreter, ms** "
            f"(median of {init['runs']}, handlers taking turns; wall-clock and CPU time; load "
            f"average {init['loadAverage']:.2f} at the end)\n"
        )
        out.append(
            _table(
                [
                    "handler",
                    "median",
                    "min / max",
                    "x floor",
                    "CPU median",
                    "CPU x floor",
                    "modules loaded",
                ],
                [
                    [
                        "floor: Starlette + Mangum + boto3 DynamoDB" if name == "floor" else name,
                        v["medianMs"],
                        f"{_f(v['minMs'])} / {_f(v['maxMs'])}",
                        _f(v["xFloor"], 2),
                        v["cpuMedianMs"],
                        _f(v["cpuXFloor"], 2),
                        v["modules"],
                    ]
                    for name, v in init.items()
                    if isinstance(v, dict)
                ],
            )
        )
    cold = r.get("cold")
    if cold:
        direct = r["latency"]["c1"].get("direct", {}).get("p50") or 0.0
        phases = {"cold": "every instance stopped", "oneWarm": "one instance kept warm"}
        out.append(
            f"\n**First request after idle** (Lambda mode, doorbell: idle instances stopped, "
            f"then one request; {cold['cold']['samples']} times each, each followed by one on "
            "the instances it warmed; legs p50, ms)\n"
        )
        rows = []
        for key, label in phases.items():
            c = cold[key]
            t = c["legs"]
            rows.append(
                [
                    f"first after idle, {label}",
                    c["coldP50"],
                    _f((c["coldP50"] or 0.0) - direct),
                    f"{c['instancesStartedPerRequest']:g} ("
                    + ", ".join(f"{k} {v}" for k, v in c["coldRequestsByKind"].items())
                    + ")",
                    *(_f(t.get(leg)) for leg in LEGS),
                    c["errors"],
                ]
            )
            rows.append(
                [
                    "  next, warm",
                    c["warmP50"],
                    _f((c["warmP50"] or 0.0) - direct),
                    0,
                    *("" for _ in LEGS),
                    "",
                ]
            )
        out.append(
            _table(
                [
                    "request",
                    "p50 ms",
                    "added p50 ms",
                    "instances started",
                    *LEG_LABELS.values(),
                    "errors",
                ],
                rows,
            )
        )
    return out


def _errors(*summaries: dict[str, Any]) -> str:
    errors: Counter[str] = Counter()
    for s in summaries:
        errors.update(s.get("errors") or {})
    return ", ".join(f"{k}: {v}" for k, v in errors.items()) or "0"
