"""A real llama.cpp backend: llama-cpp-python's OpenAI-compatible server on a tiny GGUF model
(Gemma 3 270M, Q4_K_M) that a PyPI package ships, both in `.venv-llama` (`scripts/llama`
makes it: llama.cpp is built from source, ~5 minutes on 2 cores).

Opt-in: the tests marked `llama` run with NATRELAY_LLAMA=1 (`scripts/llama test`), never in
the default run; the benchmark tests/perf/llama_affinity.py needs only the venv.

llama-cpp-python's server (0.3.x) runs one request at a time: the others, `GET /v1/models`
too, wait for the model's lock. By default (`interrupt_requests`) a request that waits cuts
a stream in progress short: it ends with `data: [DONE]` and no finish_reason. Publish it
with `maxConcurrency: 1`, or start it with `--interrupt_requests False`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.net import free_port
from tests.support.processes import ROOT
from tests.support.stack import Server

OPT_IN = "NATRELAY_LLAMA"
VENV = Path(os.environ.get("NATRELAY_LLAMA_VENV", ROOT / ".venv-llama"))
MODEL = VENV / "models" / "gemma-3-270m-q4_k_m.gguf"
# The name the server lists its model under (`--model_alias`).
ALIAS = "gemma3-270m"
# Loading the model and compiling nothing: seconds, but slower on a loaded machine.
START_SECONDS = 120.0


def opted_in() -> bool:
    return os.environ.get(OPT_IN) == "1"


def missing() -> str | None:
    """Why the llama backend cannot run here; None: it can."""
    if not (VENV / "bin" / "python").is_file():
        return f"no {VENV.name} (scripts/llama makes it: ~5 minutes, once)"
    if not MODEL.is_file():
        return f"no {MODEL.relative_to(VENV)} in {VENV.name} (scripts/llama assembles it)"
    return None


def command(
    port: int,
    *,
    n_ctx: int = 2048,
    cache: bool = False,
    interrupt: bool = True,
) -> list[str]:
    """llama-cpp-python's server on 127.0.0.1:`port`: one thread (the machine's cores are
    shared), a small context; `cache`: keep the KV state of recent prompts in RAM (a
    prompt cache over several conversations, as llama.cpp's own server keeps per slot;
    without it only the last prompt's prefix is reused)."""
    args = [str(VENV / "bin" / "python"), "-m", "llama_cpp.server", "--model", str(MODEL)]
    args += ["--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(port)]
    args += ["--n_ctx", str(n_ctx), "--n_threads", "1", "--n_threads_batch", "1"]
    # The GGUF carries no chat template; llama-2's is the one of llama-cpp-python's that
    # keeps the system message (its `gemma` drops it: the affinity benchmark needs it).
    args += ["--chat_format", "llama-2"]
    args += ["--interrupt_requests", str(interrupt), "--verbose", "False"]
    if cache:
        args += ["--cache", "True", "--cache_type", "ram", "--cache_size", str(512 << 20)]
    return args


@contextmanager
def llama_server(
    log: Path | None = None,
    *,
    n_ctx: int = 2048,
    cache: bool = False,
    interrupt: bool = True,
) -> Iterator[Server]:
    """The server, started and answering `GET /v1/models`; stopped at the end."""
    reason = missing()
    if reason is not None:
        raise RuntimeError(f"no llama.cpp backend: {reason}")
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    server = Server(
        "llama",
        lambda port: command(port, n_ctx=n_ctx, cache=cache, interrupt=interrupt),
        "/v1/models",
        port=free_port(),
        env=env,
        log=log,
        start_seconds=START_SECONDS,
    )
    try:
        yield server
    finally:
        server.stop()
