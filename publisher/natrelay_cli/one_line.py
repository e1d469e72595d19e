"""`natrelay publish --detect` / `--backend URL`: the config a command line stands for.

The relay and token come from `--relay` / `--token`, or NATRELAY_URL /
NATRELAY_PUBLISH_TOKEN. The providers are what the backends serve (natrelay_publisher.
catalog). The config is built as the YAML-shaped mapping a config file holds and validated
by the same code, so `--print-config` writes exactly what `--config` reads back.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from natrelay_publisher.catalog import Catalog
from natrelay_publisher.config import (
    ProviderConfig,
    PublisherConfig,
    parse_config,
    session_file_for,
)
from natrelay_publisher.detect import BackendSpec, parse_backend, usual_backends
from natrelay_publisher.errors import ConfigError

URL_ENV = "NATRELAY_URL"
TOKEN_ENV = "NATRELAY_PUBLISH_TOKEN"  # noqa: S105 - the name of a variable
SOURCE = "the command line"


@dataclass(frozen=True)
class OneLine:
    """What a `--detect` / `--backend` command line asks for."""

    specs: list[BackendSpec]
    sources: list[str]
    relay_url: str | None
    # The value of --token, or of NATRELAY_PUBLISH_TOKEN (never printed: see config_yaml).
    token: str | None
    session_file: Path | None
    refresh_seconds: float

    def catalog(self) -> Catalog:
        """A catalog of the backends named, which lists their models on each call."""
        return Catalog(self.specs, self.refresh_seconds)

    def check(self, *, token: bool = True) -> None:
        """ConfigError unless the relay (and the token, with `token`) are known."""
        if self.relay_url is None:
            raise ConfigError(f"no relay: give --relay URL, or set {URL_ENV}")
        if token and self.token is None:
            raise ConfigError(f"no publish token: give --token KEY, or set {TOKEN_ENV}")

    def config_data(self, providers: list[ProviderConfig]) -> dict[str, Any]:
        """The config as the YAML mapping of a config file."""
        self.check(token=False)
        assert self.relay_url is not None
        session_file = self.session_file or session_file_for(
            " ".join([self.relay_url, *self.sources])
        )
        relay = {"url": self.relay_url, "token": self.token, "sessionFile": _home(session_file)}
        return {
            "relay": relay,
            "providers": [
                p.model_dump(mode="json", by_alias=True, exclude_defaults=True, exclude={"api_key"})
                for p in providers
            ],
        }

    def config(self, providers: list[ProviderConfig]) -> PublisherConfig:
        """The config to run with; ConfigError naming what is wrong."""
        self.check()
        return parse_config(self.config_data(providers), SOURCE)

    def config_yaml(self, providers: list[ProviderConfig]) -> str:
        """The config as a file `natrelay publish --config` reads back; the token is never
        written out: it is read from NATRELAY_PUBLISH_TOKEN."""
        data = self.config_data(providers)
        data["relay"]["token"] = {"env": TOKEN_ENV}
        header = [
            f"# What `natrelay publish {' '.join(self.sources)}` publishes now, as a config file:",
            "# `natrelay publish --config FILE` reads it back. The token is read from",
            f"# {TOKEN_ENV} (or write `token: {{file: PATH}}`).",
        ]
        body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)
        return "\n".join(header) + "\n" + body


def one_line(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> OneLine:
    """The one-line publish `args` ask for; ConfigError for a bad `--backend` or port list."""
    specs: list[BackendSpec] = []
    sources: list[str] = []
    try:
        for text in args.backend or ():
            spec = parse_backend(text)
            if spec not in specs:
                specs.append(spec)
                sources.append(f"--backend {spec.source}")
        if args.detect:
            sources.append("--detect")
            given = {spec.url for spec in specs}
            specs.extend(s for s in usual_backends(environ) if s.url not in given)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return OneLine(
        specs=specs,
        sources=sources,
        relay_url=args.relay or environ.get(URL_ENV) or None,
        token=args.token or environ.get(TOKEN_ENV) or None,
        session_file=args.session_file,
        refresh_seconds=args.refresh_seconds,
    )


def _home(path: Path) -> str:
    """`~/…` for a path in the home directory (the config expands it back)."""
    home = Path.home()
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)
