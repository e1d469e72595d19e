"""The `natrelay` command: `publish` (this package) and `dev` (natrelay_infra, optional)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from importlib import metadata

from pythonjsonlogger.json import JsonFormatter

from natrelay_publisher import admin, llm_cli, secrets_cli
from natrelay_publisher.config import PublisherConfig, load_config
from natrelay_publisher.daemon import Publisher
from natrelay_publisher.errors import (
    ConfigError,
    RelayAuthError,
    RelayCallError,
    SessionFileBusyError,
)

logger = logging.getLogger("natrelay.publisher")

EXIT_FATAL = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="natrelay", description="Publish LLM backends behind NAT to a natrelay relay."
    )
    parser.add_argument("--version", action="version", version=f"natrelay {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    publish = commands.add_parser(
        "publish",
        help="register the configured providers and serve their tasks",
        description="Register the providers of a config file with the relay, then long-poll "
        "for tasks and run them on the local backends until SIGINT/SIGTERM.",
    )
    publish.add_argument("--config", "-c", required=True, metavar="FILE", help="YAML config")
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
    commands.add_parser(
        "dev",
        help="run a local relay for development (needs the local extras: pip install '.[local]')",
        add_help=False,
    )
    admin.add_commands(commands)
    llm_cli.add_commands(commands)
    secrets_cli.add_commands(commands)
    return parser


def _version() -> str:
    try:
        return metadata.version("natrelay")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `natrelay` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["dev"]:
        return _dev(args[1:])
    options = _parser().parse_args(args)
    if options.command in ("keys", "llm", "secrets"):
        return admin.run(options)
    return _publish(options.config, options.log_level, options.log_format)


def _dev(argv: list[str]) -> int:
    try:
        dev = importlib.import_module("natrelay_infra.dev")
    except ImportError as exc:
        print(
            "natrelay dev needs the local extras: from a clone of the natrelay repository, "
            f"pip install '.[local]' (or run scripts/demo) ({exc})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return int(dev.main(argv))


def _publish(config_path: str, log_level: str, log_format: str = "text") -> int:
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
    logging.basicConfig(level=log_level, handlers=[handler])
    if log_level != "DEBUG":
        # httpx logs every request at INFO: one line per poll is noise.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_serve(config))


async def _serve(config: PublisherConfig) -> int:
    stop, hurry = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, _on_signal, stop, hurry, signum)
        except NotImplementedError:  # Windows (LM Studio boxes): plain handlers
            signal.signal(
                signum, lambda n, _: loop.call_soon_threadsafe(_on_signal, stop, hurry, n)
            )
    publisher = Publisher(config)
    try:
        await publisher.run(stop, hurry)
    except RelayAuthError as exc:
        logger.error("%s: check relay.token; exiting", exc.message)
        return EXIT_FATAL
    except RelayCallError as exc:
        logger.error("the relay refused us: %s; exiting", exc.message)
        return EXIT_FATAL
    except SessionFileBusyError as exc:
        logger.error("%s", exc)
        return EXIT_FATAL
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
        os._exit(EXIT_FATAL)
    if stop.is_set():
        logger.warning("%s again: stopping now (failing the tasks in flight, deregistering)", name)
        hurry.set()
        return
    logger.info("%s received: finishing the tasks in flight", name)
    stop.set()
