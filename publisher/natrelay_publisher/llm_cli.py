"""`natrelay llm ...`: read and manage the relay's LLM rows (admin).

The same `--relay`/`NATRELAY_URL` and `--token`/`NATRELAY_ADMIN_TOKEN` as `natrelay keys`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml

from natrelay.wire import LlmList, LlmRow, Paths
from natrelay_publisher.admin import AdminClient, connection, table

ROW_COLUMNS = ("name", "kind", "status", "type", "model", "lastHeartbeatAt")


def _dump(row: LlmRow) -> dict[str, Any]:
    return row.model_dump(mode="json", by_alias=True, exclude_none=True)


def _print(data: Any, output: str) -> None:
    if output == "json":
        print(json.dumps(data, indent=2))
    else:
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")


def _list(client: AdminClient, args: argparse.Namespace) -> None:
    rows = client.call("GET", Paths.LLMS, LlmList).data
    if args.output == "table":
        print(table([_dump(r) for r in rows], ROW_COLUMNS))
    else:
        _print([_dump(r) for r in rows], args.output)


def _get(client: AdminClient, args: argparse.Namespace) -> None:
    row = client.call("GET", Paths.LLM.format(name=args.name), LlmRow)
    _print(_dump(row), args.output)


def _delete(client: AdminClient, args: argparse.Namespace) -> None:
    client.delete(Paths.LLM.format(name=args.name))
    print(f"deleted {args.name} (its name and aliases are free for any publisher key)")


def add_commands(commands: Any) -> None:
    """Add `llm` and its subcommands to the `natrelay` parser's subcommands."""
    llm = commands.add_parser(
        "llm",
        help="list, read and delete the relay's LLM rows (admin)",
        description="Read and manage the relay's LLM rows. Needs an admin token.",
    )
    sub = llm.add_subparsers(dest="llm_command", required=True, metavar="COMMAND")
    listing = sub.add_parser("list", help="every row: name, kind, status, model, heartbeat")
    listing.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    connection(listing)
    listing.set_defaults(run=_list)
    get = sub.add_parser("get", help="one row")
    get.add_argument("name")
    get.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    connection(get)
    get.set_defaults(run=_get)
    delete = sub.add_parser("delete", help="delete a row and release its name")
    delete.add_argument("name")
    connection(delete)
    delete.set_defaults(run=_delete)
