"""`natrelay llm ...`: read and manage the relay's LLM rows (admin).

The same `--relay`/`NATRELAY_URL` and `--token`/`NATRELAY_ADMIN_TOKEN` as `natrelay keys`.
`apply -f FILE` takes YAML documents (`-f -`: standard input), checks them all, then
sends them in one request: the relay writes all of them or none.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import yaml
from pydantic import BaseModel

from natrelay.wire import ApplyResult, LlmDocument, LlmList, LlmRow, Paths
from natrelay.wire.documents import DocumentError, placed, read_documents
from natrelay_cli.admin import (
    AdminClient,
    CommandError,
    connection,
    dump,
    error_of,
    print_json,
    table,
)
from natrelay_cli.exits import EXIT_FAILED, EXIT_USAGE

ROW_COLUMNS = ("name", "kind", "status", "model", "members", "queue", "lastHeartbeatAt")


def _print(data: Any, output: str) -> None:
    if output == "json":
        print_json(data)
    elif isinstance(data, list):  # one YAML document per row: what `apply -f` reads
        print(yaml.safe_dump_all(data, sort_keys=False, allow_unicode=True), end="")
    else:
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")


def _pool(client: AdminClient, name: str) -> LlmRow:
    return client.call("GET", Paths.LLM.format(name=name), LlmRow)


def _list(client: AdminClient, args: argparse.Namespace) -> None:
    rows = client.call("GET", Paths.LLMS, LlmList).data
    if args.output != "table":
        _print([dump(r) for r in rows], args.output)
        return
    lines = []
    for row in rows:
        line = dump(row)
        if row.kind != "public":  # a pool: its live members and its queue (one GET each)
            pool = _pool(client, row.name)
            line["members"] = len(pool.members or [])
            line["queue"] = pool.queue_depth
        lines.append(line)
    print(table(lines, ROW_COLUMNS))


def _get(client: AdminClient, args: argparse.Namespace) -> None:
    _print(dump(_pool(client, args.name)), args.output)


def _delete(client: AdminClient, args: argparse.Namespace) -> None:
    client.delete(Paths.LLM.format(name=args.name))
    print(f"deleted {args.name} (its name and aliases are free for any publisher key)")


# --- apply -------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot read it: {exc}", EXIT_USAGE) from exc


def documents(
    text: str,
    source: str,
    model: type[BaseModel] = LlmDocument,
    prepare: Callable[[dict[str, Any], str], dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The YAML documents of a file, checked against `model` (natrelay.wire.documents);
    CommandError (exit 2) names the file, the document and the field at fault."""
    try:
        return read_documents(text, source, model, prepare)
    except DocumentError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from exc


def _refusal(resp: Any, places: list[str]) -> CommandError:
    """The relay's refusal, naming the file and document it is about."""
    try:
        error = resp.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    code = EXIT_USAGE if resp.status_code == 400 else EXIT_FAILED
    where = placed(error.get("param"), str(error.get("message", "")), places)
    return CommandError(where or error_of(resp), code)


def _apply(client: AdminClient, args: argparse.Namespace) -> None:
    source = "<stdin>" if args.file == "-" else args.file
    docs, places = documents(_read(args.file), source)
    resp = client.send("POST", Paths.LLMS_APPLY, {"documents": docs})
    if not resp.is_success:
        raise _refusal(resp, places)
    result = ApplyResult.model_validate(resp.json())
    for applied in result.data:
        detail = f" ({', '.join(applied.changed)})" if applied.action == "updated" else ""
        print(f"{applied.name}: {applied.action}{detail}")


Run = Callable[[AdminClient, argparse.Namespace], None]


def manage_commands(
    parser: Any, dest: str, runs: dict[str, Run], helps: dict[str, str], apply_about: str
) -> None:
    """`list`, `get NAME`, `apply -f FILE` and `delete NAME` under `parser` (the same
    options for rows and agents), running `runs[command]`."""
    sub = parser.add_subparsers(dest=dest, required=True, metavar="COMMAND")
    listing = sub.add_parser("list", help=helps["list"])
    listing.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    get = sub.add_parser("get", help=helps["get"])
    get.add_argument("name")
    get.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    apply = sub.add_parser("apply", help=helps["apply"], description=apply_about)
    apply.add_argument("-f", "--file", required=True, metavar="FILE", help="YAML; - for stdin")
    delete = sub.add_parser("delete", help=helps["delete"])
    delete.add_argument("name")
    for command, each in (("list", listing), ("get", get), ("apply", apply), ("delete", delete)):
        connection(each)
        each.set_defaults(run=runs[command])


def add_commands(commands: Any) -> None:
    """Add `llm` and its subcommands to the `natrelay` parser's subcommands."""
    llm = commands.add_parser(
        "llm",
        help="list, read, apply and delete the relay's LLM rows (admin)",
        description="Read and manage the relay's LLM rows. Needs an admin token.",
    )
    manage_commands(
        llm,
        "llm_command",
        {"list": _list, "get": _get, "apply": _apply, "delete": _delete},
        {
            "list": "every row: name, kind, status, members, queue",
            "get": "one row, with its pool",
            "apply": "create or change rows from YAML documents (all or none)",
            "delete": "delete a row and release its name",
        },
        "Create or change public rows, and the admin settings of virtual rows "
        "(description, tier, fallbacks, pool settings), from YAML documents. Lifecycle "
        "fields (status, heartbeats, members, ...) are ignored: the output of `get -o yaml` "
        "applies as it is.",
    )
