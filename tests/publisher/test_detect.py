"""Finding backends and what they serve (detect.py), and the providers made of them
(catalog.py): names, duplicates, limits, and what each listing says."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from natrelay.wire import MAX_PROVIDERS
from natrelay_publisher import detect
from natrelay_publisher.catalog import Catalog, provider_configs
from natrelay_publisher.detect import (
    Backend,
    BackendSpec,
    BackendType,
    Unusable,
    parse_backend,
    probe_all,
    usual_backends,
)
from tests.publisher.fakes import OLLAMA_VERSION, ollama_app
from tests.support.backend import FakeBackend
from tests.support.net import closed_port, serve


def not_an_llm() -> Starlette:
    """A web server that is no LLM server: a page, and 404 everywhere else."""
    return Starlette(routes=[Route("/", lambda request: PlainTextResponse("<html>hi</html>"))])


def wants_a_key() -> Starlette:
    async def models(request: Request) -> Response:
        return JSONResponse({"error": {"message": "no key"}}, 401)

    return Starlette(routes=[Route("/v1/models", models)])


@dataclass
class Servers:
    ollama: str
    ollama_models: list[str]
    openai: str
    openai_backend: FakeBackend
    web: str
    keyed: str
    closed: str


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    models = ["llama3:latest", "qwen2:7b"]
    backend = FakeBackend(models=("qwen2:7b", "/models/Mistral-7B.Q4.gguf"))
    with ExitStack() as stack:
        apps = (ollama_app(FakeBackend(), models), backend.app(), not_an_llm(), wants_a_key())
        ollama, openai, web, keyed = (stack.enter_context(serve(app)) for app in apps)
        closed = stack.enter_context(closed_port())
        yield Servers(ollama, models, openai, backend, web, keyed, closed)


def probe(*specs: BackendSpec) -> list[Backend | Unusable]:
    return asyncio.run(probe_all(specs))


@pytest.mark.parametrize(
    ("given", "url", "kind"),
    [
        ("http://127.0.0.1:11434", "http://127.0.0.1:11434", None),
        ("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080", None),
        ("ollama:http://gpu-box:11434", "http://gpu-box:11434", BackendType.OLLAMA),
        ("openai:https://gpu-box/llm/v1", "https://gpu-box/llm", BackendType.OPENAI),
        ("localhost:1234", "http://localhost:1234", None),
        # A host called `ollama` (a compose service), not a type: no URL follows.
        ("ollama:11434", "http://ollama:11434", None),
        ("8000", "http://127.0.0.1:8000", None),
    ],
)
def test_backend_arguments(given: str, url: str, kind: BackendType | None) -> None:
    assert parse_backend(given) == BackendSpec(url, kind)


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("vllm:http://127.0.0.1:8000", "unknown backend type 'vllm' (ollama or openai)"),
        ("ftp://127.0.0.1:21", "should be an http:// or https:// URL"),
        ("http://", "should be an http:// or https:// URL"),
    ],
)
def test_bad_backend_arguments(given: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_backend(given)
    assert says in str(caught.value) and repr(given) in str(caught.value)


def test_the_ports_detect_probes() -> None:
    assert [s.url for s in usual_backends({})][:4] == [
        "http://127.0.0.1:11434",
        "http://127.0.0.1:8080",
        "http://127.0.0.1:1234",
        "http://127.0.0.1:8000",
    ]
    probed = usual_backends({"NATRELAY_DETECT_PORTS": "5,6"})
    assert probed == [
        BackendSpec("http://127.0.0.1:5", detected=True),
        BackendSpec("http://127.0.0.1:6", detected=True),
    ]
    for bad in ("eleven", "0", "70000", ","):
        with pytest.raises(ValueError, match="NATRELAY_DETECT_PORTS"):
            usual_backends({"NATRELAY_DETECT_PORTS": bad})


def test_probing_tells_each_backend_apart(servers: Servers) -> None:
    ollama, openai, web, keyed, closed = probe(
        *(BackendSpec(u) for u in (servers.ollama, servers.openai, servers.web)),
        BackendSpec(servers.keyed),
        BackendSpec(servers.closed),
    )
    assert ollama == Backend(
        BackendSpec(servers.ollama),
        BackendType.OLLAMA,
        servers.ollama,
        ("llama3:latest", "qwen2:7b"),
        f"Ollama {OLLAMA_VERSION}",
    )
    assert isinstance(openai, Backend) and openai.type is BackendType.OPENAI
    assert openai.base_url == f"{servers.openai}/v1"
    assert openai.models == ("/models/Mistral-7B.Q4.gguf", "qwen2:7b")
    assert isinstance(web, Unusable) and not web.silent
    assert web.reason == (
        "answers HTTP but is not an LLM server (GET /api/version: 404, GET /v1/models: 404)"
    )
    assert isinstance(keyed, Unusable) and keyed.reason.startswith("wants an API key")
    assert isinstance(closed, Unusable) and closed.silent
    assert closed.reason.startswith("nothing answers there")


def test_a_type_given_is_the_type_probed(servers: Servers) -> None:
    as_openai, as_ollama = probe(
        BackendSpec(servers.ollama, BackendType.OPENAI),
        BackendSpec(servers.openai, BackendType.OLLAMA),
    )
    # The fake Ollama has no /v1/models; the OpenAI server no /api/version.
    assert isinstance(as_openai, Unusable) and "not an LLM server" in as_openai.reason
    assert as_ollama == Unusable(
        BackendSpec(servers.openai, BackendType.OLLAMA),
        "is not Ollama (GET /api/version answered 404)",
    )


def backend(label: str, *models: str, kind: BackendType = BackendType.OPENAI) -> Backend:
    url = f"http://127.0.0.1:{label}"
    return Backend(BackendSpec(url), kind, f"{url}/v1", models, "a server")


def test_the_first_backend_to_serve_a_name_wins_it() -> None:
    configs, notes = provider_configs(
        [backend("1", "llama3:latest", "qwen2:7b"), backend("2", "llama3", "Qwen2:7B", "phi4")]
    )
    assert [(c.name, c.model, c.aliases) for c in configs] == [
        ("llama3", "llama3:latest", ["llama3:latest"]),
        ("qwen2:7b", "qwen2:7b", []),
        ("phi4", "phi4", []),
    ]
    assert [n.text for n in notes] == [
        "llama3 of http://127.0.0.1:2/v1 is not published: llama3 is already published from "
        "http://127.0.0.1:1/v1",
        # Names are owned case-insensitively.
        "Qwen2:7B of http://127.0.0.1:2/v1 is not published: Qwen2:7B is already published "
        "from http://127.0.0.1:1/v1",
    ]


def test_one_publisher_publishes_what_one_registration_holds() -> None:
    models = [f"m{i}:latest" for i in range(MAX_PROVIDERS + 5)]
    configs, notes = provider_configs([backend("1", *models)])
    assert len(configs) == MAX_PROVIDERS
    # Two writes per name, one per alias, one for the session: at most 100.
    assert 2 * len(configs) + sum(len(c.aliases) for c in configs) + 1 <= 100
    assert [c.model for c in configs] == models[:MAX_PROVIDERS]
    assert len(notes) == 1
    assert notes[0].text.startswith("5 more models are not published")


def test_listing_again_says_what_changed_once(
    servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "natrelay.publisher")
    catalog = Catalog([BackendSpec(servers.ollama), BackendSpec(servers.web)])
    first = asyncio.run(catalog.providers())
    assert [c.name for c in first] == ["llama3", "qwen2:7b"]
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        f"found Ollama {OLLAMA_VERSION} at {servers.ollama} (2 models)",
        f"--backend {servers.web} answers HTTP but is not an LLM server (GET /api/version: "
        "404, GET /v1/models: 404)",
        f"publishing llama3 (aliases llama3:latest): llama3:latest on Ollama {OLLAMA_VERSION} "
        f"at {servers.ollama}",
        f"publishing qwen2:7b: qwen2:7b on Ollama {OLLAMA_VERSION} at {servers.ollama}",
    ]
    caplog.clear()
    assert asyncio.run(catalog.providers()) == first
    assert caplog.records == []  # nothing changed: nothing said
    servers.ollama_models[:] = ["llama3:latest", "phi4:latest"]
    try:
        assert [c.name for c in asyncio.run(catalog.providers())] == ["llama3", "phi4"]
    finally:
        servers.ollama_models[:] = ["llama3:latest", "qwen2:7b"]
    assert [r.getMessage() for r in caplog.records] == [
        f"publishing phi4 (aliases phi4:latest): phi4:latest on Ollama {OLLAMA_VERSION} at "
        f"{servers.ollama}",
        f"unpublishing qwen2:7b: {servers.ollama} lists it no more",
    ]


def test_a_backend_that_stops_answering_keeps_its_models(
    servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    with serve(FakeBackend(models=("solo",)).app()) as url:
        catalog = Catalog([BackendSpec(url)])
        assert [c.name for c in asyncio.run(catalog.providers())] == ["solo"]
    caplog.set_level(logging.INFO, "natrelay.publisher")
    # what the first look said is kept whenever an earlier test left the logger at INFO
    caplog.clear()
    assert [c.name for c in asyncio.run(catalog.providers())] == ["solo"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{url} nothing answers there (All connection attempts failed): its models stay published"
    ]


def test_a_detected_port_with_nothing_on_it_is_no_news(
    servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "natrelay.publisher")
    specs = [BackendSpec(u, detected=True) for u in (servers.closed, servers.web)]
    assert asyncio.run(Catalog(specs).providers()) == []
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.INFO,
            f"{servers.web} answers HTTP but is not an LLM server (GET /api/version: 404, "
            "GET /v1/models: 404)",
        )
    ]


def test_servers_that_answer_nothing_useful(monkeypatch: pytest.MonkeyPatch) -> None:
    async def page(request: Request) -> Response:
        return PlainTextResponse("<html>an app that answers every path</html>")

    async def silent(request: Request) -> Response:
        while not await request.is_disconnected():  # until the client gives up
            await asyncio.sleep(0.05)
        return Response()

    async def not_a_list(request: Request) -> Response:
        return JSONResponse({"data": "none"})

    everything = Starlette(routes=[Route("/{path:path}", page)])
    hangs = Starlette(routes=[Route("/{path:path}", silent)])
    odd = Starlette(routes=[Route("/v1/models", not_a_list)])
    monkeypatch.setattr(detect, "PROBE_TIMEOUT", httpx.Timeout(0.5))
    with serve(everything) as a, serve(hangs) as b, serve(odd) as c:
        caught = probe(BackendSpec(a), BackendSpec(b), BackendSpec(c))
    assert [p.reason for p in caught if isinstance(p, Unusable)] == [
        "answers HTTP but is not an LLM server (GET /api/version: 200 with text/plain, not the "
        "expected JSON, GET /v1/models: 200 with text/plain, not the expected JSON)",
        "did not answer within 0.5 s",
        "answers HTTP but is not an LLM server (GET /api/version: 404, GET /v1/models: 200 "
        "with application/json, not the expected JSON)",
    ]
