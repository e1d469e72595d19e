"""The providers a set of backends serve: one per model, named after it (naming.py).

`Catalog.providers()` probes the backends (detect.py) and returns the `ProviderConfig`s to
publish, exactly as a config file's `providers[]` would give them. Called again every
`every` seconds by the daemon, it publishes the models a backend lists since (`ollama
pull`) and unpublishes those it lists no more. A backend that does not answer keeps its
models (the heartbeat's checks report them `unavailable` until it is back). The first
backend to serve a name wins it: a model of the same name elsewhere is left out, with a
line saying so. Each such line is logged once, not at every listing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from natrelay.wire import MAX_PROVIDERS, MAX_TRANSACTION_ITEMS
from natrelay_publisher.config import ProviderConfig, format_errors
from natrelay_publisher.detect import (
    PORTS_ENV,
    Backend,
    BackendSpec,
    Probe,
    Unusable,
    probe_all,
)
from natrelay_publisher.naming import PublishedName, name_for
from natrelay_publisher.redact import public_url

logger = logging.getLogger("natrelay.publisher")

# How often the backends' model lists are read again: a model pulled is published within
# this plus a poll's wait (a re-registration waits for the poll in flight).
REFRESH_SECONDS = 20.0


@dataclass(frozen=True)
class Note:
    level: int
    text: str


def provider_configs(backends: Sequence[Backend]) -> tuple[list[ProviderConfig], list[Note]]:
    """One provider per model of each backend, in order; the lines to say about the rest."""
    notes: list[Note] = []
    named: list[tuple[Backend, str, PublishedName]] = []
    served_by: dict[str, str] = {}  # a name (casefolded) -> the backend serving it
    for backend in backends:
        for model in backend.models:
            published = name_for(model)
            if published is None:
                notes.append(_warn(f"{backend.label}: no valid name can be made of {model!r}"))
            elif published.name.casefold() in served_by:
                where = served_by[published.name.casefold()]
                notes.append(
                    _warn(
                        f"{published.name} of {backend.label} is not published: "
                        f"{published.name} is already published from {where}"
                    )
                )
            else:
                served_by[published.name.casefold()] = backend.label
                named.append((backend, model, published))
    if len(named) > MAX_PROVIDERS:
        left_out = ", ".join(p.name for _, _, p in named[MAX_PROVIDERS:])
        notes.append(
            _warn(
                f"{len(named) - MAX_PROVIDERS} more models are not published (one publisher "
                f"publishes at most {MAX_PROVIDERS}): {left_out}"
            )
        )
        named = named[:MAX_PROVIDERS]
    # One registration is one transaction: 2 writes per name, 1 per alias, 1 for the session.
    room = MAX_TRANSACTION_ITEMS - 1 - 2 * len(named)
    taken = {p.name.casefold() for _, _, p in named}
    configs: list[ProviderConfig] = []
    for backend, model, published in named:
        aliases = [a for a in published.aliases if a.casefold() not in taken][: max(room, 0)]
        entry = {
            "name": published.name,
            "type": backend.type.value,
            "baseUrl": backend.base_url,
            "model": model,
            "aliases": aliases,
        }
        try:
            config = ProviderConfig.model_validate(entry)
        except ValidationError as exc:
            reason = format_errors(f"{model!r} of {backend.label}", exc)
            notes.append(_warn(f"{reason}: not published"))
            continue
        configs.append(config)
        room -= len(aliases)
        taken.update(a.casefold() for a in aliases)
    return configs, notes


def _warn(text: str) -> Note:
    return Note(logging.WARNING, text)


def describe(config: ProviderConfig, backend: Backend | None) -> str:
    """`llama3 (aliases llama3:latest): llama3:latest on Ollama 0.5.7 at URL`."""
    aliases = f" (aliases {', '.join(config.aliases)})" if config.aliases else ""
    where = f"{backend.server} at {backend.label}" if backend else public_url(config.base_url or "")
    return f"{config.name}{aliases}: {config.model} on {where}"


class Catalog:
    """The providers the backends of `specs` serve now, read again on each call."""

    def __init__(self, specs: Sequence[BackendSpec], every: float = REFRESH_SECONDS) -> None:
        self.specs = list(specs)
        self.every = every
        # The last answer of each backend that answered: kept while it does not answer.
        self._last: dict[BackendSpec, Backend] = {}
        self._published: dict[str, ProviderConfig] = {}
        self._said: set[Note] = set()

    async def providers(self, busy: Collection[str] = ()) -> list[ProviderConfig]:
        """The providers to publish now; logs what changed since the last call. A backend
        whose `baseUrl` is in `busy` (requests running on it) is not asked again: its last
        answer stands (natrelay_publisher.health says why)."""
        notes: list[Note] = []
        backends: list[Backend] = []
        resting = [
            s for s in self.specs if s not in self._last or self._last[s].base_url not in busy
        ]
        answers: dict[BackendSpec, Probe] = dict(
            zip(resting, await probe_all(resting), strict=True)
        )
        for spec in self.specs:
            probe = answers.get(spec) or self._last[spec]
            if isinstance(probe, Backend):
                last = self._last.get(probe.spec)
                if last is None or (last.server, last.base_url) != (probe.server, probe.base_url):
                    count = f"{len(probe.models)} model{'' if len(probe.models) == 1 else 's'}"
                    logger.info("found %s at %s (%s)", probe.server, probe.label, count)
                self._last[probe.spec] = probe
                backends.append(probe)
            else:
                notes.extend(self._unusable(probe, backends))
        configs, more = provider_configs(backends)
        notes.extend(more)
        if not configs and self._published:
            configs = list(self._published.values())
            names = ", ".join(self._published)
            notes.append(_warn(f"no backend lists a model now: {names} stay published for now"))
        self._say(notes)
        self._log_changes(configs, backends)
        return configs

    def _unusable(self, probe: Unusable, backends: list[Backend]) -> list[Note]:
        last = self._last.get(probe.spec)
        if last is not None:
            backends.append(last)
            return [_warn(f"{probe.spec.label} {probe.reason}: its models stay published")]
        if probe.spec.detected:
            # A usual port with nothing on it is no news; something else there is.
            said = Note(logging.INFO, f"{probe.spec.label} {probe.reason}")
            return [] if probe.silent else [said]
        return [_warn(f"--backend {probe.spec.label} {probe.reason}")]

    def _say(self, notes: list[Note]) -> None:
        for note in notes:
            if note not in self._said:
                logger.log(note.level, "%s", note.text)
        self._said = set(notes)

    def _log_changes(self, configs: list[ProviderConfig], backends: list[Backend]) -> None:
        served = {c.name: b for b in backends for c in configs if c.base_url == b.base_url}
        wanted = {c.name: c for c in configs}
        for name, config in wanted.items():
            if self._published.get(name) != config:
                logger.info("publishing %s", describe(config, served.get(name)))
        for name, config in self._published.items():
            if name not in wanted:
                where = public_url(config.base_url or "")
                logger.info("unpublishing %s: %s lists it no more", name, where)
        self._published = wanted

    def _where_detected(self) -> str:
        detected = [s for s in self.specs if s.detected]
        ports = [httpx.URL(s.url).port for s in detected]
        if not ports or any(s in self._last for s in detected):
            return ""
        listed = ", ".join(str(port) for port in ports)
        return f" (no LLM server on the ports --detect probes: {listed}; {PORTS_ENV} sets them)"

    async def first(self, stop: asyncio.Event) -> list[ProviderConfig]:
        """The providers, once there is one at least (an empty list: `stop` came first,
        or there is none and no `every` to look again)."""
        waiting = False
        while True:
            configs = await self.providers()
            if configs or not self.every:
                return configs
            if not waiting:
                logger.warning(
                    "nothing to publish yet%s: looking again every %g s",
                    self._where_detected(),
                    self.every,
                )
                waiting = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)
            if stop.is_set():
                return []
