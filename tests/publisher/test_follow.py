"""A publisher that follows its backends' models (`--detect`, `--backend`) against a
scripted relay: it registers again under the same session as models come and go, and
never while a request runs (the relay would take that request for lost)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from natrelay_publisher.catalog import Catalog
from natrelay_publisher.config import ProviderConfig
from natrelay_publisher.detect import BackendSpec
from tests.publisher.fake_relay import SESSION, FakeRelay, infer_task
from tests.publisher.test_publisher import publisher, run, until
from tests.support.net import serve


class GatedBackend:
    """An OpenAI-compatible server whose models the test sets, and whose answers wait
    until the test opens the gate."""

    def __init__(self, *models: str) -> None:
        self.models = list(models)
        self.gate = threading.Event()
        self.asked = threading.Event()
        self.listed = 0  # GET /v1/models answered

    def app(self) -> Starlette:
        async def models(request: Request) -> Response:
            self.listed += 1
            return JSONResponse({"object": "list", "data": [{"id": m} for m in self.models]})

        async def chat(request: Request) -> Response:
            body = await request.json()
            self.asked.set()
            while not self.gate.is_set():
                await asyncio.sleep(0.01)
            message = {"role": "assistant", "content": f"{body['model']} says hi"}
            return JSONResponse(
                {
                    "id": "c",
                    "object": "chat.completion",
                    "created": 1,
                    "model": body["model"],
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                }
            )

        return Starlette(
            routes=[
                Route("/v1/models", models),
                Route("/v1/chat/completions", chat, methods=["POST"]),
            ]
        )


@pytest.fixture
def backend() -> Iterator[tuple[str, GatedBackend]]:
    gated = GatedBackend("alpha")
    with serve(gated.app()) as url:
        yield url, gated


class CountingCatalog(Catalog):
    """A catalog that counts its listings (the daemon's calls)."""

    calls = 0

    async def providers(self, busy: Collection[str] = ()) -> list[ProviderConfig]:
        self.calls += 1
        return await super().providers(busy)


def registered(fake: FakeRelay) -> list[list[str]]:
    """The names of each registration, in order."""
    return [[p["name"] for p in body["providers"]] for body in fake.calls("register")]


def test_models_that_come_and_go_are_registered_again_when_no_request_runs(
    relay: tuple[str, FakeRelay],
    backend: tuple[str, GatedBackend],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "natrelay.publisher")
    url, fake = relay
    backend_url, gated = backend

    catalog = CountingCatalog([BackendSpec(backend_url)], every=0.1)
    providers = asyncio.run(catalog.providers())
    entries = [p.model_dump(by_alias=True, exclude_defaults=True) for p in providers]

    async def scenario() -> None:
        await until(lambda: registered(fake) == [["alpha"]])
        fake.add(infer_task("t1", "alpha", "hello"))
        await until(gated.asked.is_set)
        # A model appears while a request runs: the backend is not asked (llama.cpp's
        # servers answer nothing else while they generate; llama-cpp-python's cuts its
        # stream short for a request that waits), nothing is registered.
        gated.models = ["alpha", "beta"]
        listed, calls = gated.listed, catalog.calls
        await until(lambda: catalog.calls >= calls + 3)
        assert gated.listed == listed
        assert registered(fake) == [["alpha"]]
        gated.gate.set()
        await until(lambda: any("publishing beta" in r.getMessage() for r in caplog.records))
        await until(lambda: len(registered(fake)) == 2)
        assert registered(fake)[1] == ["alpha", "beta"]
        kinds = [kind for _, kind, _ in fake.events if kind in ("register", "result")]
        assert kinds == ["register", "result", "register"]
        # The same session, registered again (the relay's register is an upsert).
        assert fake.calls("register")[1]["providerSessionId"] == SESSION
        # A model removed is unpublished; the task of a new one runs.
        gated.models = ["beta"]
        await until(lambda: registered(fake)[-1] == ["beta"])
        fake.add(infer_task("t2", "beta", "hi"))
        await until(lambda: "t2" in fake.results())
        answer = fake.results()["t2"]["body"]["choices"][0]["message"]["content"]
        assert answer == "beta says hi"

    run(publisher(url, tmp_path, *entries, catalog=catalog), scenario)
