"""The soak: 3 publishers, mixed requests, random faults, for minutes; then the count.

`scripts/soak [--duration SECONDS] [--seed N] [--workers N] [--faults KINDS] [--json FILE]`
(10 minutes by default); tests/soak/test_soak.py runs a short one in CI.

Everything is a real process but the backend: moto (`MotoProcess`, so it can be frozen),
the relay (`natrelay dev` on it, long-lived mode, with its sweeper), three `natrelay
publish` processes (one with a stored publisher key, two with the shared token), and the
fake OpenAI backend in this process, echoing (so every answer can be checked, and every
execution counted by the nonce in its prompt).

Clients (threads) send, until the time is up and every kind of fault ran once: plain
and streamed requests through the official `openai` client (its default retries on, a
third with an `Idempotency-Key`), async ones through httpx (`Prefer: respond-async`,
then polling the task), and a few to backends that hang, send garbage or stop mid-stream.
Meanwhile, every 10-20 s, a fault: a publisher or the relay killed (SIGKILL) and started
again, DynamoDB frozen for 5 s, or a publisher frozen (SIGSTOP) for 15 s — past the
relay's work window, so what it held moves on — and resumed (SIGCONT).

Each request ends as one of: answered (the right text), a clear error (an OpenAI-style
error, an SSE error event, or a refused connection while the relay was down), wrong (an
answer that is not the right text, or one from a backend that failed), or lost (no answer
and no error within its budget). Lost and wrong must be 0. Run twice: requests whose
prompt reached the backend more than once (reported apart for those with an
Idempotency-Key). At the end nothing may stay pending or claimed in the tasks table.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai

from natrelay.wire import Paths, TaskState, TaskView
from natrelay_infra.moto_server import MotoProcess
from tests.publisher.running import PublisherProcess, start_publisher
from tests.support.backend import FakeBackend
from tests.support.net import serve, wait_until
from tests.support.stack import CLIENT_TOKEN, DevRelay, dynamodb_client

CLIENT_BUDGET_SECONDS = 60.0
FAULT_EVERY_SECONDS = (10.0, 20.0)
FREEZE_SECONDS = 5.0
# A publisher frozen (SIGSTOP: its sockets stay open, nothing answers, as on a cut
# network) past the relay's work window, then resumed: what it held moved on meanwhile.
FREEZE_PUBLISHER_SECONDS = 15.0
FAULTS = ("kill-publisher", "kill-relay", "freeze-dynamodb", "freeze-publisher")
# Models that must fail, and how they are asked (streamed or not).
BROKEN = [("cut", True), ("garbage", True), ("hang", True), ("hang", False)]


@dataclass
class Outcome:
    kind: str
    model: str
    idempotent: bool
    result: str  # answered | error | wrong | lost
    detail: str
    seconds: float
    nonce: str


@dataclass
class Report:
    seconds: float
    seed: int
    sent: int = 0
    answered: int = 0
    errors: int = 0
    lost: int = 0
    wrong: int = 0
    # Prompts the backend saw more than once: a task handed out again after its publisher
    # died, or the client's request queued twice (the SDK retrying an error).
    run_twice: int = 0
    queued_twice: int = 0
    queued_twice_idempotent: int = 0
    idempotent_sent: int = 0
    unsettled: int = 0
    unsettled_tasks: list[dict[str, Any]] = field(default_factory=list)
    rss_start_kb: int = 0
    rss_end_kb: int = 0
    # The RSS of each relay process (a fault restarts it) soon after its start.
    rss_at_starts_kb: list[int] = field(default_factory=list)
    relay_starts: int = 0
    faults: list[str] = field(default_factory=list)
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        mb = 1024
        kinds = ", ".join(
            f"{kind} {sum(counts.values())}" for kind, counts in sorted(self.by_kind.items())
        )
        lines = [
            f"soak: {self.seconds:.0f} s, seed {self.seed}, {len(self.faults)} faults "
            f"({_counts(collections.Counter(f.split()[1].rstrip(':') for f in self.faults))})",
            f"  requests sent:               {self.sent} ({kinds})",
            f"  answered:                    {self.answered}",
            f"  failed with a clear error:   {self.errors}"
            + (f" ({_counts(self.error_kinds)})" if self.error_kinds else ""),
            f"  lost:                        {self.lost}",
            f"  wrong answers:               {self.wrong}",
            f"  run twice:                   {self.run_twice} (queued twice by client "
            f"retries: {self.queued_twice}, of which with an Idempotency-Key: "
            f"{self.queued_twice_idempotent} of {self.idempotent_sent} sent; the rest: a task "
            "run again after its publisher died)",
            f"  pending or claimed at end:   {self.unsettled}",
            f"  relay RSS:                   {self.rss_start_kb / mb:.1f} MB at start, "
            f"{self.rss_end_kb / mb:.1f} MB at end"
            + (
                f" (killed and restarted {self.relay_starts - 1} times; each start: "
                f"{', '.join(f'{kb / mb:.1f}' for kb in self.rss_at_starts_kb)} MB)"
                if self.relay_starts > 1
                else ""
            ),
        ]
        for result, examples in self.examples.items():
            lines += [f"  e.g. {result}: {example}" for example in examples]
        lines += [f"  left unfinished: {task}" for task in self.unsettled_tasks[:5]]
        return lines


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1]))


class Soak:
    def __init__(
        self,
        workdir: Path,
        duration: float,
        seed: int,
        workers: int,
        faults: tuple[str, ...] = FAULTS,
        fault_every: tuple[float, float] = FAULT_EVERY_SECONDS,
    ) -> None:
        self.kinds = faults
        self.fault_every = fault_every
        self.workdir = workdir
        self.duration = duration
        self.seed = seed
        self.workers = workers
        self.rng = random.Random(seed)
        self.outcomes: list[Outcome] = []
        self.faults: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.backend = FakeBackend(echo=True, stream_echo=True, interval=0.01)
        self.publishers: dict[str, PublisherProcess] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        self.rss_at_starts: list[int] = []

    # --- the cluster -------------------------------------------------------------------

    @contextmanager
    def cluster(self) -> Iterator[None]:
        with ExitStack() as stack:
            moto = stack.enter_context(MotoProcess())
            self.moto = moto
            url = stack.enter_context(serve(self.backend.app()))
            self.relay = DevRelay(moto.endpoint, self.workdir, heartbeat_timeout=10)
            self.relay.start()
            stack.callback(self.relay.stop)
            stack.callback(moto.resume)
            key = self.relay.publisher_key("soak box")

            def provider(name: str, model: str = "m", **fields: Any) -> dict[str, Any]:
                base = {"name": name, "type": "openai", "baseUrl": f"{url}/v1", "model": model}
                return {**base, "maxConcurrency": 8, **fields}

            publishers = {
                "p1": ([provider("alpha")], key),
                "p2": (
                    [
                        provider("beta"),
                        provider("cut", "truncate"),
                        provider("garbage", "garbage"),
                        provider("hang", "hang", timeoutSeconds=3),
                    ],
                    None,
                ),
                "p3": ([provider("gamma")], None),
            }
            for name, (providers, token) in publishers.items():
                config = self.relay.publisher_config(
                    providers,
                    self.workdir / f"{name}.session",
                    **({"token": token} if token else {}),
                )
                self.configs[name] = config
                self._start_publisher(name)
            stack.callback(self._stop_publishers)
            for publisher in self.publishers.values():
                publisher.wait_log("registered session", timeout=30)
            yield

    def _start_publisher(self, name: str) -> None:
        run = sum(1 for p in self.workdir.glob(f"{name}-*.log")) + 1
        self.publishers[name] = start_publisher(
            self.configs[name],
            self.workdir,
            f"{name}-{run}",
            config_path=self.workdir / f"{name}.yaml",
        )

    def _stop_publishers(self) -> None:
        for publisher in self.publishers.values():
            if publisher.process.poll() is None:
                publisher.process.kill()
                publisher.process.wait()

    # --- faults ------------------------------------------------------------------------

    def _fault_loop(self, deadline: float) -> None:
        """Faults until the deadline, and at least one of each kind however slow they are
        (on a loaded machine a restart takes long): then the load stops."""
        rng = random.Random(self.seed + 1)
        deck: list[str] = []
        done: set[str] = set()
        while True:
            pause, left = rng.uniform(*self.fault_every), deadline - time.monotonic()
            time.sleep(min(pause, left) if left > 0 else self.fault_every[0])
            if time.monotonic() > deadline - 5 and done >= set(self.kinds):
                return
            if not self.kinds:
                return
            if not deck:  # every kind once, in a random order, then again
                deck = list(self.kinds)
                rng.shuffle(deck)
            fault = deck.pop()
            started = time.monotonic()
            if fault == "kill-publisher":
                name = rng.choice(sorted(self.publishers))
                self.publishers[name].process.kill()
                self.publishers[name].process.wait()
                time.sleep(rng.uniform(0.5, 3))
                self._start_publisher(name)
                what = f"{name} killed, restarted"
            elif fault == "freeze-publisher":
                name = rng.choice(sorted(self.publishers))
                process = self.publishers[name].process
                process.send_signal(signal.SIGSTOP)
                try:
                    time.sleep(FREEZE_PUBLISHER_SECONDS)
                finally:
                    process.send_signal(signal.SIGCONT)
                what = f"{name} frozen {FREEZE_PUBLISHER_SECONDS:g} s, resumed"
            elif fault == "kill-relay":
                self.relay.kill()
                time.sleep(rng.uniform(0.5, 2))
                self.relay.start()
                self.rss_at_starts.append(self.relay.rss_kb())
                what = "relay killed, restarted"
            else:
                self.moto.pause()
                time.sleep(FREEZE_SECONDS)
                self.moto.resume()
                what = f"DynamoDB frozen {FREEZE_SECONDS:g} s"
            self.faults.append(f"{started - self.started:6.1f}s {fault}: {what}")
            done.add(fault)

    # --- clients -----------------------------------------------------------------------

    def _worker(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        sdk = openai.OpenAI(
            base_url=f"{self.relay.url}/v1", api_key=CLIENT_TOKEN, timeout=CLIENT_BUDGET_SECONDS
        )
        count = 0
        while not self.stopping.is_set():
            count += 1
            nonce = f"n{index}-{count}-{uuid.uuid4().hex[:8]}"
            prompt = f"{nonce} " + " ".join(f"w{i}" for i in range(rng.randint(1, 30)))
            if rng.random() < 0.08:
                model, stream = rng.choice(BROKEN)
                kind = "broken-stream" if stream else "broken-plain"
                idempotent = False
                call: Callable[[], str] = (
                    (lambda m=model: _sdk_stream(sdk, m, prompt))
                    if stream
                    else (lambda m=model: _sdk_plain(sdk, m, prompt))
                )
            else:
                model = rng.choice(["alpha", "beta", "gamma"])
                kind = rng.choices(["plain", "stream", "async"], [45, 35, 20])[0]
                idempotent = kind != "async" and rng.random() < 0.33
                headers = {"Idempotency-Key": nonce} if idempotent else {}
                if kind == "plain":
                    call = lambda: _sdk_plain(sdk, model, prompt, headers)  # noqa: E731
                elif kind == "stream":
                    call = lambda: _sdk_stream(sdk, model, prompt, headers)  # noqa: E731
                else:
                    call = lambda: self._async(model, prompt)  # noqa: E731
            outcome = _judge(kind, model, idempotent, nonce, prompt, call)
            with self.lock:
                self.outcomes.append(outcome)
            time.sleep(rng.uniform(0, 0.3))

    def _async(self, model: str, prompt: str) -> str:
        headers = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
        with httpx.Client(base_url=self.relay.url, headers=headers, timeout=30) as http:
            accepted = http.post(
                Paths.INFER.format(name=model),
                headers={"Prefer": "respond-async"},
                json={"messages": [{"role": "user", "content": prompt}]},
            )
            if accepted.status_code != 202:
                raise _HttpError(accepted)
            location = accepted.headers["location"]
            deadline = time.monotonic() + CLIENT_BUDGET_SECONDS
            while time.monotonic() < deadline:
                try:
                    answer = http.get(location)
                except httpx.TransportError:  # the relay is restarting: ask again
                    time.sleep(0.5)
                    continue
                if answer.status_code >= 500:
                    time.sleep(0.5)
                    continue
                if answer.status_code != 200:
                    raise _HttpError(answer)
                view = TaskView.model_validate(answer.json())
                if view.state is TaskState.COMPLETED:
                    return str(view.result["choices"][0]["message"]["content"])
                if view.state.done:
                    message = view.error.message if view.error else view.state.value
                    raise _TaskFailed(f"task {view.state.value}: {message}")
                time.sleep(0.3)
        raise TimeoutError(f"the async task {location} did not finish within the budget")

    # --- the run -----------------------------------------------------------------------

    def run(self) -> Report:
        with self.cluster():
            self.started = time.monotonic()
            deadline = self.started + self.duration
            time.sleep(1)
            rss_start = self.relay.rss_kb()
            self.rss_at_starts.append(rss_start)
            threads = [
                threading.Thread(target=self._worker, args=(i,), daemon=True)
                for i in range(self.workers)
            ]
            for thread in threads:
                thread.start()
            # Faults from this thread: a relay started from a thread that ends would get
            # SIGTERM with it (PR_SET_PDEATHSIG, see natrelay_infra.children).
            self._fault_loop(deadline)
            self.stopping.set()  # the load lasts as long as the faults
            for thread in threads:
                thread.join(CLIENT_BUDGET_SECONDS * 3 + 30)
            # What the faults left behind must settle within a lease or two.
            with suppress(TimeoutError):
                wait_until(lambda: not self.relay.unsettled(), 60, interval=0.5)
            left = self.relay.unsettled()
            unsettled = len(left)
            rss_end = self.relay.rss_kb()
            report = self._report(time.monotonic() - self.started, unsettled)
            report.rss_start_kb, report.rss_end_kb = rss_start, rss_end
            report.rss_at_starts_kb = list(self.rss_at_starts)
            report.unsettled_tasks = left
            return report

    def _tasks_per_nonce(self) -> collections.Counter[str]:
        """How many tasks (infer items in the tasks table) carry each request's nonce."""
        client = dynamodb_client(self.relay.dynamodb)
        found: collections.Counter[str] = collections.Counter()
        for page in client.get_paginator("scan").paginate(
            TableName=self.relay.tables.tasks,
            FilterExpression="sk = :m AND kind = :infer",
            ExpressionAttributeValues={":m": {"S": "m"}, ":infer": {"S": "infer"}},
        ):
            for item in page["Items"]:
                found.update(set(_NONCE.findall(str(item))))
        return found

    def _report(self, seconds: float, unsettled: int) -> Report:
        report = Report(seconds=seconds, seed=self.seed, faults=list(self.faults))
        executions = collections.Counter(
            str((body.get("messages") or [{}])[-1].get("content", "")).split(" ", 1)[0]
            for body in self.backend.requests
        )
        queued = self._tasks_per_nonce()
        by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        errors: collections.Counter[str] = collections.Counter()
        examples: dict[str, list[str]] = collections.defaultdict(list)
        for outcome in self.outcomes:
            report.sent += 1
            by_kind[outcome.kind][outcome.result] += 1
            if outcome.result == "answered":
                report.answered += 1
            elif outcome.result == "error":
                report.errors += 1
                errors[outcome.detail.split(":", 1)[0]] += 1
            elif outcome.result == "lost":
                report.lost += 1
            else:
                report.wrong += 1
            if outcome.result in ("lost", "wrong") and len(examples[outcome.result]) < 5:
                examples[outcome.result].append(f"{outcome.kind} {outcome.model}: {outcome.detail}")
            if outcome.idempotent:
                report.idempotent_sent += 1
            if executions[outcome.nonce] > 1:
                report.run_twice += 1
            if queued[outcome.nonce] > 1:
                report.queued_twice += 1
                report.queued_twice_idempotent += outcome.idempotent
        report.by_kind = {k: dict(v) for k, v in by_kind.items()}
        report.error_kinds = dict(errors)
        report.examples = dict(examples)
        report.unsettled = unsettled
        report.relay_starts = self.relay.starts
        return report


_NONCE = re.compile(r"n\d+-\d+-[0-9a-f]{8}")


class _HttpError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}: {response.text[:200]}")
        self.status = response.status_code
        self.clear = "error" in response.text


class _TaskFailed(Exception):
    pass


def _sdk_plain(
    sdk: openai.OpenAI, model: str, prompt: str, headers: dict[str, str] | None = None
) -> str:
    reply = sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], extra_headers=headers
    )
    return reply.choices[0].message.content or ""


def _sdk_stream(
    sdk: openai.OpenAI, model: str, prompt: str, headers: dict[str, str] | None = None
) -> str:
    stream = sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        extra_headers=headers,
    )
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def _judge(
    kind: str, model: str, idempotent: bool, nonce: str, prompt: str, call: Callable[[], str]
) -> Outcome:
    """Run one request and say how it ended."""
    started = time.monotonic()

    def outcome(result: str, detail: str) -> Outcome:
        return Outcome(kind, model, idempotent, result, detail, time.monotonic() - started, nonce)

    try:
        text = call()
    except (openai.APITimeoutError, httpx.TimeoutException, TimeoutError) as exc:
        return outcome("lost", f"no answer within the budget: {exc!r}")
    except openai.APIConnectionError as exc:
        return outcome("error", f"connection: {exc.__cause__ or exc!r}")
    except httpx.TransportError as exc:
        return outcome("error", f"connection: {exc!r}")
    except openai.APIStatusError as exc:
        clear = isinstance(exc.body, dict) and bool(exc.message)
        return outcome("error" if clear else "wrong", f"{exc.status_code}: {exc.message[:160]}")
    except openai.APIError as exc:  # an SSE error event
        return outcome("error", f"stream error event: {exc.message[:160]}")
    except _HttpError as exc:
        return outcome("error" if exc.clear else "wrong", f"{exc.status}: {exc}")
    except _TaskFailed as exc:
        return outcome("error", f"async task failed: {exc}")
    except Exception as exc:  # anything else is not a clear error
        return outcome("wrong", f"unexpected {exc!r}")
    if kind.startswith("broken"):
        return outcome("wrong", f"a broken backend's answer was taken as whole: {text[:80]!r}")
    if text != prompt:
        return outcome("wrong", f"answer {text[:80]!r} is not the prompt {prompt[:80]!r}")
    return outcome("answered", "")


def run_soak(
    duration: float,
    seed: int | None = None,
    workers: int = 6,
    workdir: Path | None = None,
    faults: tuple[str, ...] = FAULTS,
    fault_every: tuple[float, float] = FAULT_EVERY_SECONDS,
) -> Report:
    """Run a soak; the logs of its processes go to `workdir` (default: a temporary one)."""
    seed = random.randrange(1_000_000) if seed is None else seed
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        return Soak(workdir, duration, seed, workers, faults, fault_every).run()
    with tempfile.TemporaryDirectory(prefix="natrelay-soak-") as temporary:
        return Soak(Path(temporary), duration, seed, workers, faults, fault_every).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    parser.add_argument("--seed", type=int, help="the random seed (printed; default: random)")
    parser.add_argument("--workers", type=int, default=6, help="client threads (default 6)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--workdir", type=Path, help="keep the processes' logs here")
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help="the kinds of fault, comma-separated (default: all, %(default)s; '' for none): "
        "without kill-relay, one relay process runs throughout and its RSS tells a leak",
    )
    args = parser.parse_args(argv)
    faults = tuple(f for f in args.faults.split(",") if f)
    if unknown := set(faults) - set(FAULTS):
        parser.error(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    report = run_soak(args.duration, args.seed, args.workers, args.workdir, faults)
    print("\n".join(report.lines()))
    print("faults:\n" + "\n".join(f"  {f}" for f in report.faults))
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2))
    ok = report.lost == 0 and report.wrong == 0 and report.unsettled == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
