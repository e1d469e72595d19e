"""What the relay adds per API: each endpoint called straight at a fake backend and
through `natrelay dev` (moto, one API process, the real publisher), with the official
SDKs, sequentially. On demand, not part of the suite:

    python -m tests.perf.endpoints [--n 30]

Prints, per endpoint, the median and p90 of the whole call (plain) or of the time to
the first event (streamed), direct and relayed, in milliseconds. The fake backend
answers at once; streamed events come 10 ms apart. 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import types
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anthropic
import openai

from natrelay_infra.dev import DEV_CLIENT_TOKEN, DEV_PUBLISH_TOKEN
from tests.infra.test_dev import natrelay_dev
from tests.publisher.running import start_publisher, wait_rows
from tests.support.backend import FakeBackend
from tests.support.net import serve

MODEL = "org/backend-model"
USER = [{"role": "user", "content": "hello relay"}]


def _timed(call: Callable[[], Any], n: int) -> tuple[float, float]:
    call()  # warm up (connections, the pool's first claim)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def _first(stream: Any) -> None:
    """Read up to the first event, then close the stream."""
    with stream:
        next(iter(stream))


def _calls(oai: openai.OpenAI, claude: anthropic.Anthropic, model: str) -> dict[str, Any]:
    msg: Any = USER
    return {
        "chat": lambda: oai.chat.completions.create(model=model, messages=msg),
        "chat, first event": lambda: _first(
            oai.chat.completions.create(model=model, messages=msg, stream=True)
        ),
        "completions": lambda: oai.completions.create(model=model, prompt="say"),
        "embeddings": lambda: oai.embeddings.create(model=model, input=["a b", "c"]),
        "responses": lambda: oai.responses.create(model=model, input="hi"),
        "responses, first event": lambda: _first(
            oai.responses.create(model=model, input="hi", stream=True)
        ),
        "messages": lambda: claude.messages.create(model=model, max_tokens=8, messages=msg),
        "messages, first event": lambda: _first(
            claude.messages.create(model=model, max_tokens=8, messages=msg, stream=True)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=30, help="calls per endpoint and path")
    n = parser.parse_args().n
    backend = FakeBackend(reply="one two three four", interval=0.01)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = stack.enter_context(serve(backend.app()))
        dev = stack.enter_context(natrelay_dev(tmp))
        dev.wait_for(r"^Ctrl-C stops everything")
        config = {
            "relay": {
                "url": dev.url,
                "token": DEV_PUBLISH_TOKEN,
                "sessionFile": str(tmp / "session.json"),
            },
            "providers": [{"name": "m", "type": "openai", "baseUrl": f"{url}/v1", "model": MODEL}],
        }
        publisher = start_publisher(config, tmp)
        stack.callback(publisher.stop)
        target = types.SimpleNamespace(url=dev.url, client_token=DEV_CLIENT_TOKEN)
        wait_rows(target, {"m": "active"})  # type: ignore[arg-type]

        def sdks(base: str) -> tuple[openai.OpenAI, anthropic.Anthropic]:
            key = DEV_CLIENT_TOKEN
            return (
                openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0),
                anthropic.Anthropic(base_url=base, api_key=key, max_retries=0),
            )

        direct = _calls(*sdks(url), MODEL)
        relayed = _calls(*sdks(dev.url), "m")
        print(f"{'ms, n=' + str(n):<24}{'direct p50':>12}{'p90':>8}{'relayed p50':>14}{'p90':>8}")
        for name in direct:
            d50, d90 = _timed(direct[name], n)
            r50, r90 = _timed(relayed[name], n)
            print(f"{name:<24}{d50:>12.1f}{d90:>8.1f}{r50:>14.1f}{r90:>8.1f}")


if __name__ == "__main__":
    main()
