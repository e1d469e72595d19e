"""Finding the LLM servers of this machine and what models they serve.

A backend is named by `--backend [ollama:|openai:]URL` (or `HOST:PORT`, or a port), or
found by `--detect` on the usual ports of 127.0.0.1 (`USUAL_PORTS`; the environment
variable NATRELAY_DETECT_PORTS, a comma-separated list, replaces them). Probing one tells
its type and lists its models: Ollama answers `GET /api/version` (its models:
`GET /api/tags`); an OpenAI-compatible server answers `GET /v1/models`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from natrelay_publisher.redact import describe, public_url


class BackendType(StrEnum):
    """The provider type a backend is published with."""

    OLLAMA = "ollama"
    OPENAI = "openai"


# The ports LLM servers listen on by default, in the order they are probed.
USUAL_PORTS: dict[int, str] = {
    11434: "Ollama",
    8080: "llama.cpp server, LocalAI, llamafile",
    1234: "LM Studio",
    8000: "vLLM",
    30000: "SGLang",
    5000: "text-generation-webui, TabbyAPI",
    5001: "KoboldCpp",
    1337: "Jan",
    4891: "GPT4All",
}
PORTS_ENV = "NATRELAY_DETECT_PORTS"
PROBE_TIMEOUT = httpx.Timeout(5.0, connect=2.0)


@dataclass(frozen=True)
class BackendSpec:
    """A backend to publish: its root URL (no `/v1`), its type if it was given, and
    whether `--detect` found it on a usual port (then silence there is no news)."""

    url: str
    type: BackendType | None = None
    detected: bool = False

    @property
    def label(self) -> str:
        """The URL as logs show it (no userinfo, query or fragment)."""
        return public_url(self.url)

    @property
    def source(self) -> str:
        """What names it on a command line: `--backend` takes this back."""
        return f"{self.type}:{self.url}" if self.type else self.url


@dataclass(frozen=True)
class Backend:
    """A backend that answered: its type, the provider's `baseUrl`, and its models."""

    spec: BackendSpec
    type: BackendType
    base_url: str
    models: tuple[str, ...]
    server: str

    @property
    def label(self) -> str:
        return public_url(self.base_url)


@dataclass(frozen=True)
class Unusable:
    """A backend that could not be published, and why; `silent`: nothing listens."""

    spec: BackendSpec
    reason: str
    silent: bool = False


Probe = Backend | Unusable


def parse_backend(text: str) -> BackendSpec:
    """`[ollama:|openai:]URL`, `HOST:PORT` or `PORT`; ValueError saying what is wrong."""
    given = text.strip()
    kind: BackendType | None = None
    head, _, rest = given.partition(":")
    if head in BackendType.__members__.values() and "://" in rest:
        kind, given = BackendType(head), rest
    elif head.isalpha() and "://" in rest and head not in ("http", "https"):
        raise ValueError(f"{text!r}: unknown backend type {head!r} (ollama or openai)")
    if given.isdigit():
        given = f"127.0.0.1:{given}"
    if "://" not in given:
        given = f"http://{given}"
    try:
        url = httpx.URL(given)
    except httpx.InvalidURL as exc:
        raise ValueError(f"{text!r}: not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{text!r}: should be an http:// or https:// URL, HOST:PORT or a port")
    root = given.split("?", 1)[0].rstrip("/").removesuffix("/v1").rstrip("/")
    return BackendSpec(root, kind)


def usual_backends(environ: Mapping[str, str] = os.environ) -> list[BackendSpec]:
    """The backends `--detect` probes: the usual ports, or those NATRELAY_DETECT_PORTS lists."""
    listed = environ.get(PORTS_ENV)
    ports: Sequence[int] = list(USUAL_PORTS)
    if listed is not None:
        try:
            ports = [int(p) for p in listed.replace(" ", "").split(",") if p]
        except ValueError:
            raise ValueError(
                f"{PORTS_ENV}={listed!r}: should be ports separated by commas"
            ) from None
        if not ports or not all(0 < p < 65536 for p in ports):
            raise ValueError(f"{PORTS_ENV}={listed!r}: should be ports (1-65535), comma-separated")
    return [BackendSpec(f"http://127.0.0.1:{port}", detected=True) for port in ports]


async def probe_all(specs: Sequence[BackendSpec]) -> list[Probe]:
    """Probe every backend at once; the answers in the order of `specs`."""
    async with httpx.AsyncClient(timeout=PROBE_TIMEOUT, follow_redirects=False) as client:
        return list(await asyncio.gather(*(probe(client, spec) for spec in specs)))


class _Unanswered(Exception):
    """Nothing answered (`silent`), or not within the timeout."""

    def __init__(self, reason: str, *, silent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.silent = silent


async def probe(client: httpx.AsyncClient, spec: BackendSpec) -> Probe:
    """What the backend at `spec` is and what it serves (Unusable: why it cannot be published)."""
    try:
        return await _probe(client, spec)
    except _Unanswered as exc:
        return Unusable(spec, exc.reason, silent=exc.silent)


async def _probe(client: httpx.AsyncClient, spec: BackendSpec) -> Probe:
    answered: list[str] = []
    if spec.type in (None, BackendType.OLLAMA):
        response = await _get(client, f"{spec.url}/api/version")
        version = _json(response).get("version") if response.is_success else None
        if isinstance(version, str):
            return await _ollama(client, spec, version)
        if spec.type is BackendType.OLLAMA:
            return Unusable(spec, f"is not Ollama (GET /api/version answered {_said(response)})")
        answered.append(f"GET /api/version: {_said(response)}")
    response = await _get(client, f"{spec.url}/v1/models")
    data = _json(response).get("data") if response.is_success else None
    if response.status_code in (401, 403):
        return Unusable(
            spec,
            f"wants an API key (GET /v1/models answered {response.status_code}): publish it "
            "from a config file with its apiKey (--print-config writes one to start from)",
        )
    if not isinstance(data, list):
        answered.append(f"GET /v1/models: {_said(response)}")
        return Unusable(spec, f"answers HTTP but is not an LLM server ({', '.join(answered)})")
    models = [str(item["id"]) for item in data if isinstance(item, dict) and item.get("id")]
    base = f"{spec.url}/v1"
    return Backend(spec, BackendType.OPENAI, base, _sorted(models), "an OpenAI-compatible server")


async def _ollama(client: httpx.AsyncClient, spec: BackendSpec, version: str) -> Probe:
    response = await _get(client, f"{spec.url}/api/tags")
    listed = _json(response).get("models") if response.is_success else None
    if not isinstance(listed, list):
        return Unusable(spec, f"is Ollama {version}, but GET /api/tags answered {_said(response)}")
    models = [
        str(item.get("name") or item.get("model"))
        for item in listed
        if isinstance(item, dict) and (item.get("name") or item.get("model"))
    ]
    return Backend(spec, BackendType.OLLAMA, spec.url, _sorted(models), f"Ollama {version}")


async def _get(client: httpx.AsyncClient, url: str) -> httpx.Response:
    try:
        return await client.get(url)
    except httpx.ConnectError as exc:
        detail = str(exc) or "cannot connect"
        raise _Unanswered(f"nothing answers there ({detail})", silent=True) from None
    except httpx.TimeoutException:
        seconds = PROBE_TIMEOUT.read or 0
        raise _Unanswered(f"did not answer within {seconds:g} s", silent=False) from None
    except httpx.HTTPError as exc:
        raise _Unanswered(f"cannot be reached: {describe(exc)}", silent=False) from None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _said(response: httpx.Response) -> str:
    if not response.is_success:
        return f"{response.status_code}"
    kind = response.headers.get("content-type", "").split(";")[0] or "no content type"
    return f"{response.status_code} with {kind}, not the expected JSON"


def _sorted(models: list[str]) -> tuple[str, ...]:
    return tuple(sorted(dict.fromkeys(models)))
