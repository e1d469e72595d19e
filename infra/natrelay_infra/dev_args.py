"""The command line of `natrelay dev`, and the host names it takes."""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path

from natrelay_infra.state import STATE_DIR_ENV


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="natrelay dev",
        description="Run the relay locally: API, sweeper and an embedded DynamoDB (moto).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=8787, help="0 picks a free port")
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[h for h in env("NATRELAY_ALLOWED_HOSTS", "").split(",") if h.strip()],
        metavar="NAME",
        help="a name the relay answers for besides IP addresses and localhost (a web page "
        "on any other name is refused: DNS rebinding); repeatable",
    )
    parser.add_argument(
        "--dynamodb-endpoint",
        default=env("NATRELAY_DYNAMODB_ENDPOINT"),
        help="use this DynamoDB (DynamoDB Local, or AWS) instead of an embedded moto server",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="keep the embedded DynamoDB's state (keys, rows, usage, secrets) here across "
        f"restarts (default ${STATE_DIR_ENV}, else ~/.local/state/natrelay/dev)",
    )
    parser.add_argument(
        "--ephemeral",
        action="store_true",
        help="start empty and keep nothing (tests, throwaway runs)",
    )
    parser.add_argument("--table-prefix", default="natrelay-dev-")
    parser.add_argument("--llms-table", help="table name (overrides the prefix)")
    parser.add_argument("--tasks-table", help="table name (overrides the prefix)")
    parser.add_argument("--keys-table", help="table name (overrides the prefix)")
    parser.add_argument(
        "--no-create-tables",
        dest="create_tables",
        action="store_false",
        help="use existing tables (e.g. a deployed stack's)",
    )
    parser.add_argument(
        "--admin-token",
        default=env("NATRELAY_ADMIN_TOKEN"),
        help="the admin token (manage keys with `natrelay keys`); generated if not given",
    )
    parser.add_argument("--client-token", default=env("NATRELAY_CLIENT_TOKEN"))
    parser.add_argument(
        "--publisher-token",
        "--publish-token",
        dest="publisher_token",
        default=env("NATRELAY_PUBLISH_TOKEN"),
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=float,
        metavar="SECONDS",
        help="a publisher silent this long is offline (default 90)",
    )
    parser.add_argument(
        "--sweep-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="run the sweeper this often; 0 disables it (default %(default)s)",
    )
    parser.add_argument(
        "--doorbell",
        dest="doorbell",
        action="store_true",
        default=False,
        help="offer publishers the doorbell WebSocket, rung in-process: an idle publisher "
        "then costs fewer DynamoDB requests, but its requests skip the fast path "
        "(docs/relay.md)",
    )
    parser.add_argument(
        "--no-doorbell",
        dest="doorbell",
        action="store_false",
        help="publishers long-poll and requests take the fast path (the default)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="also run a publisher with the models echo and echo-sleepy",
    )
    parser.add_argument(
        "--secret-from-env",
        action="append",
        default=[],
        metavar="NAME=VAR",
        help="create the secret NAME (e.g. natrelay/openai, for a public row's apiKey) in "
        "the embedded moto, from the environment variable VAR; repeatable",
    )
    parser.add_argument("--pid-file", type=Path, help="write the demo publisher's pid here")
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="json: one JSON line per log record, with the request id (default %(default)s)",
    )
    return parser


def allowed_hosts(args: argparse.Namespace) -> list[str]:
    """The names the relay answers for (IP addresses always): localhost, the bound
    name, and those given."""
    named = [] if is_unspecified(args.host) or _is_address(args.host) else [args.host]
    return ["localhost", *named, *(h.strip() for h in args.allowed_host)]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False
