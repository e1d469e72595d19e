"""`natrelay publish`: run the publisher in the foreground until SIGINT/SIGTERM.

Logs go to stderr (text, or one JSON object per line). A second signal hurries the stop
(the tasks in flight are failed, the session deregistered); a third exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from natrelay_cli.exits import EXIT_FAILED, EXIT_USAGE
from natrelay_publisher.config import PublisherConfig, load_config
from natrelay_publisher.daemon import Publisher
from natrelay_publisher.errors import (
    ConfigError,
    RelayAuthError,
    RelayCallError,
    SessionFileBusyError,
)

logger = logging.getLogger("natrelay.publisher")


def add_command(commands: Any) -> None:
    """Add `publish` to the `natrelay` parser's subcommands."""
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


def run(args: argparse.Namespace) -> int:
    """Run a parsed `natrelay publish`; returns the exit code."""
    _log_to_stderr(args.log_level, args.log_format)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_serve(config))


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
    logging.basicConfig(level=log_level, handlers=[handler])
    if log_level != "DEBUG":
        # httpx logs every request at INFO: one line per poll is noise.
        logging.getLogger("httpx").setLevel(logging.WARNING)


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
