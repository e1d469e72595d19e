"""Affinity on real llama.cpp servers: a pool of two members, each a publisher in front of
its own llama-cpp-python server (Gemma 3 270M, one thread: tests/support/llama.py), and
people holding multi-turn conversations with it; today's dispatch (affinity off) against
affinity, on the same trace in the same run: both arms at once, each on its own servers.

    scripts/llama bench [--conversations N] [--turns N] [--out F.json]
    (= python -m tests.perf.llama_affinity, once scripts/llama has made .venv-llama)

The servers keep the KV cache of the last prompt they evaluated and reuse its longest
common prefix (llama-cpp-python without `--cache`; llama.cpp's own server does so per
slot): a turn served where its conversation's previous turn was evaluates only the new
messages; elsewhere it evaluates the conversation's whole history again. Each
conversation opens with a long message of its own (a document pasted in) after a system
prompt all share, as a chat about a document would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from natrelay_infra.moto_server import MotoProcess
from tests.perf.pool_driver import (
    Profile,
    Script,
    conversations,
    gain,
    pool_stack,
    pool_view,
    ttft_figures,
)
from tests.support import llama
from tests.support.stack import Server

SYSTEM = " ".join(
    f"Rule {i}: answer in one short sentence and stay polite to the customer." for i in range(24)
)
# A system prompt all share (~400 tokens); a document of its own for each conversation
# (160 made-up words, ~790 tokens), 12 words (~60 tokens) a turn after it; short answers
# (min_tokens: this base model often ends its answer at once otherwise), greedy. A turn
# served where its conversation was evaluates ~70 tokens; elsewhere, its history again.
SCRIPT = Script(
    system=SYSTEM,
    opening=160,
    words=12,
    body=(("max_tokens", 12), ("min_tokens", 4), ("temperature", 0.0)),
)
# How long a turn may wait for the member that has its conversation: about what that
# member takes for one turn, well under what evaluating the history again costs elsewhere.
AFFINITY_WAIT_SECONDS = 3.0
ARMS = (("today", 0.0), ("affinity", AFFINITY_WAIT_SECONDS))
# A later turn slower than this share of the arm's median first turn (which evaluates
# ~1200 tokens) evaluated its history again (800 to 1100 tokens); a hit evaluates ~70.
MISS_SHARE = 0.4


@contextmanager
def members(logdir: Path, arm: str, count: int = 2) -> Iterator[list[Server]]:
    """`count` llama servers, started fresh (no KV cache left by another arm)."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(llama.llama_server(logdir / f"llama-{arm}{i}.log", interrupt=False))
            for i in range(count)
        ]


def arm(moto: str, logdir: Path, profile: Profile, name: str, wait: float) -> dict[str, Any]:
    """One arm: its own two servers and relay, the trace played against them."""
    with members(logdir, name) as servers:
        urls = [f"{server.url}/v1" for server in servers]
        with pool_stack(
            f"llama-{name}",
            moto,
            logdir,
            urls,
            model=llama.ALIAS,
            max_concurrency=1,  # the server runs one request at a time
            affinity_wait_seconds=wait,
        ) as s:
            turns = asyncio.run(conversations(s.client_api.url, profile, script=SCRIPT))
            pool = pool_view(s)
    later = [t for n, t in turns if n > 0]
    first = sorted(t for n, t in turns if n == 0)
    slow = MISS_SHARE * first[len(first) // 2] if first else float("inf")
    out = {
        **ttft_figures(turns, profile),
        # turns after the first that took long enough to have evaluated their
        # conversation's history again
        "laterTurnsMissed": f"{sum(t > slow for t in later)} of {len(later)}",
        "affinityHits": pool.get("affinityHits"),
        "affinityMisses": pool.get("affinityMisses"),
    }
    print("llama affinity", name, json.dumps(out), flush=True)
    return out


def run(moto: str, logdir: Path, profile: Profile) -> dict[str, Any]:
    """Both arms at once, so that whatever else loads the machine meanwhile weighs on
    both alike (run one after the other, a burst of load in one arm decides the figure).
    They share the cores: today's arm, evaluating more, slows the affinity arm too."""
    out: dict[str, Any] = {
        "profile": profile.__dict__,
        "affinityWaitSeconds": AFFINITY_WAIT_SECONDS,
    }
    # Each arm's children live as long as the thread that started them.
    with ThreadPoolExecutor(len(ARMS)) as pool:
        jobs = {name: pool.submit(arm, moto, logdir, profile, name, wait) for name, wait in ARMS}
        out.update({name: job.result() for name, job in jobs.items()})
    out["ttftGain"] = gain(out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=6)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    reason = llama.missing()
    if reason is not None:
        print(f"llama_affinity: {reason}", file=sys.stderr)
        return 2
    # Two conversations at a time on two members: each could have a member of its own.
    profile = Profile(conversations=args.conversations, turns=args.turns, workers=2)
    with tempfile.TemporaryDirectory(prefix="natrelay-llama-") as tmp, MotoProcess() as moto:
        r = run(moto.endpoint, Path(tmp), profile)
    print(json.dumps({"ttftGain": r["ttftGain"], **{a: r[a] for a, _ in ARMS}}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(r, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
