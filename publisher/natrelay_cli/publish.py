"""`natrelay publish`: run the publisher in the foreground until SIGINT/SIGTERM.

What it publishes comes from a config file (`--config`), or from the backends it finds
(`--detect`, `--backend`: natrelay_cli.one_line), whose models it follows while it runs.
`--print-config` and `--print-systemd` print instead of running. Logs go to stderr (text,
or one JSON object per line). A second signal hurries the stop (the tasks in flight are
failed, the session deregistered); a third exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from natrelay.wire.trace import TraceFields
from natrelay_cli.exits import EXIT_FAILED, EXIT_USAGE
from natrelay_cli.one_line import URL_ENV, OneLine, one_line
from natrelay_cli.units import systemd_unit
from natrelay_publisher.catalog import REFRESH_SECONDS
from natrelay_publisher.config import PublisherConfig, load_config
from natrelay_publisher.daemon import Publisher
from natrelay_publisher.detect import PORTS_ENV, USUAL_PORTS
from natrelay_publisher.errors import (
    ConfigError,
    RelayAuthError,
    RelayCallError,
    SessionFileBusyError,
)

logger = logging.getLogger("natrelay.publisher")

EXAMPLES = """examples:
  natrelay publish --detect --relay https://relay.example.com --token nrk_...
  natrelay publish --backend http://127.0.0.1:11434 --backend openai:http://gpu-box:8000/v1
  natrelay publish --detect --print-config > publisher.yaml     # a config to start from
  natrelay publish --config publisher.yaml
  natrelay publish --detect --print-systemd > ~/.config/systemd/user/natrelay-publish.service
"""


def add_command(commands: Any) -> None:
    """Add `publish` to the `natrelay` parser's subcommands."""
    publish = commands.add_parser(
        "publish",
        help="publish this machine's LLM backends and serve their tasks",
        description="Register LLM backends with the relay, then wait for tasks and run them "
        "on the backends until SIGINT/SIGTERM. The backends come from a config file, or are "
        "found: every model they serve is published under its own name.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = publish.add_argument_group("what to publish: a config file, or the backends found")
    what.add_argument("--config", "-c", metavar="FILE", help="YAML config (docs/publisher.md)")
    ports = ", ".join(f"{port} {name.split(',')[0]}" for port, name in USUAL_PORTS.items())
    what.add_argument(
        "--detect",
        action="store_true",
        help=f"every model of the LLM servers on this machine's usual ports ({ports}; "
        f"{PORTS_ENV}=P1,P2 probes those instead)",
    )
    what.add_argument(
        "--backend",
        action="append",
        metavar="[TYPE:]URL",
        help="every model of this server: http://HOST:PORT (with or without /v1), HOST:PORT "
        "or a port of 127.0.0.1; ollama: or openai: before a URL forces its type. Repeatable",
    )
    what.add_argument("--relay", metavar="URL", help=f"the relay's URL (default: ${URL_ENV})")
    what.add_argument(
        "--token",
        metavar="KEY",
        help="the publisher key (default: $NATRELAY_PUBLISH_TOKEN, which, unlike a command "
        "line, other users of this machine cannot read)",
    )
    what.add_argument(
        "--refresh-seconds",
        type=float,
        default=REFRESH_SECONDS,
        metavar="S",
        help=f"list the backends' models again this often: new ones are published, removed "
        f"ones unpublished (default: {REFRESH_SECONDS:g}; 0: never)",
    )
    publish.add_argument(
        "--session-file",
        type=Path,
        metavar="PATH",
        help="keep the session id here (default: one file per config file or command line "
        "in ~/.config/natrelay)",
    )
    printing = publish.add_mutually_exclusive_group()
    printing.add_argument(
        "--print-config",
        action="store_true",
        help="print the config --detect/--backend publishes, as YAML for --config, and exit",
    )
    printing.add_argument(
        "--print-systemd",
        nargs="?",
        const="user",
        choices=["user", "system"],
        help="print a systemd unit (a user unit unless `system`) that runs this command as a "
        "service, and exit",
    )
    publish.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default: INFO",
    )
    publish.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="json: one JSON object per line, for service managers (default: text)",
    )


def run(args: argparse.Namespace) -> int:
    """Run a parsed `natrelay publish`; returns the exit code."""
    _log_to_stderr(args.log_level, args.log_format)
    try:
        _check(args)
        line = None if args.config else one_line(args)
        if args.print_systemd:
            unit = systemd_unit(
                args.print_systemd,
                _service_args(args),
                token_file_required=not args.config,
                environment={k: os.environ[k] for k in (PORTS_ENV,) if os.environ.get(k)},
            )
            print(unit, end="")
            return 0
        if line is None:
            config = load_config(args.config)
            if args.session_file:
                config.relay.session_file = args.session_file
            return asyncio.run(_serve(_ready(config)))
        line.check(token=not args.print_config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    if args.print_config:
        return asyncio.run(_print_config(line))
    return asyncio.run(_serve(_found(line)))


def _check(args: argparse.Namespace) -> None:
    """The options that do not go together; ConfigError saying which."""
    found = bool(args.detect or args.backend)
    if args.session_file is not None:
        args.session_file = args.session_file.expanduser().absolute()
    if args.config and found:
        raise ConfigError("give --config FILE, or --detect/--backend URL: not both")
    if not args.config and not found:
        raise ConfigError("say what to publish: --detect, --backend URL, or --config FILE")
    if args.config and (args.relay or args.token):
        raise ConfigError("--relay and --token go with --detect/--backend; a config has its relay")
    if args.config and args.print_config:
        raise ConfigError("--print-config prints what --detect/--backend publish, not --config")
    if args.refresh_seconds < 0:
        raise ConfigError("--refresh-seconds: should be 0 (never) or more")


def _service_args(args: argparse.Namespace) -> list[str]:
    """The arguments of the service's `natrelay publish`: this command's, but the token."""
    if args.config:
        given = ["--config", str(Path(args.config).expanduser().absolute())]
    else:
        relay = args.relay or os.environ.get(URL_ENV)
        if not relay:
            raise ConfigError(f"no relay: give --relay URL, or set {URL_ENV}")
        given = [arg for backend in args.backend or () for arg in ("--backend", backend)]
        given += ["--detect"] if args.detect else []
        given += ["--relay", relay]
        if args.refresh_seconds != REFRESH_SECONDS:
            given += ["--refresh-seconds", f"{args.refresh_seconds:g}"]
    if args.log_level != "INFO":
        given += ["--log-level", args.log_level]
    if args.log_format != "text":
        given += ["--log-format", args.log_format]
    return given


async def _print_config(line: OneLine) -> int:
    providers = await line.catalog().providers()
    if not providers:
        logger.error("nothing to publish: no backend serves a model now")
        return EXIT_FAILED
    try:
        print(line.config_yaml(providers), end="")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    return 0


Prepare = Callable[[asyncio.Event], Awaitable[Publisher | None]]


def _ready(config: PublisherConfig) -> Prepare:
    async def prepare(stop: asyncio.Event) -> Publisher:
        return Publisher(config)

    return prepare


def _found(line: OneLine) -> Prepare:
    """The publisher of what the backends serve, once they serve something."""

    async def prepare(stop: asyncio.Event) -> Publisher | None:
        catalog = line.catalog()
        providers = await catalog.first(stop)
        if not providers:
            return None
        return Publisher(line.config(providers), catalog=catalog)

    return prepare


def _log_to_stderr(log_level: str, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(TraceFields())  # the running task's traceparent on its lines
    logging.basicConfig(level=log_level, handlers=[handler])
    if log_level != "DEBUG":
        # httpx logs every request at INFO: one line per poll is noise.
        logging.getLogger("httpx").setLevel(logging.WARNING)


async def _serve(prepare: Prepare) -> int:
    stop, hurry = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, _on_signal, stop, hurry, signum)
        except NotImplementedError:  # Windows (LM Studio boxes): plain handlers
            signal.signal(
                signum, lambda n, _: loop.call_soon_threadsafe(_on_signal, stop, hurry, n)
            )
    try:
        publisher = await prepare(stop)
        if publisher is None:
            if not stop.is_set():
                logger.error("nothing to publish: no backend serves a model")
                return EXIT_FAILED
        else:
            await publisher.run(stop, hurry)
    except ConfigError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    except RelayAuthError as exc:
        logger.error("%s: check relay.token; exiting", exc.message)
        return EXIT_FAILED
    except RelayCallError as exc:
        logger.error("the relay refused us: %s; exiting", exc.message)
        return EXIT_FAILED
    except SessionFileBusyError as exc:
        logger.error("%s", exc)
        return EXIT_FAILED
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signum)
    logger.info("stopped")
    return 0


def _on_signal(stop: asyncio.Event, hurry: asyncio.Event, signum: int) -> None:
    name = signal.Signals(signum).name
    if hurry.is_set():
        # A third: the user wants out now, whatever is left registered.
        logger.warning("%s a third time: exiting without cleaning up", name)
        logging.shutdown()
        os._exit(EXIT_FAILED)
    if stop.is_set():
        logger.warning("%s again: stopping now (failing the tasks in flight, deregistering)", name)
        hurry.set()
        return
    logger.info("%s received: finishing the tasks in flight", name)
    stop.set()
