"""`natrelay keys ...`: manage a relay's keys and read their usage over its admin API."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from natrelay.wire import (
    KeyCreated,
    KeyList,
    KeySpec,
    KeyView,
    Paths,
    Priority,
    Role,
    UsageView,
)
from natrelay_cli.admin import AdminClient, common_options, dump, print_json, table

_DURATION = re.compile(r"^(\d+)([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str) -> int:
    """`30d`, `12h`, `90m`, `3600s` or plain seconds, as seconds (argparse type)."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use a number with s, m, h, d or w (e.g. 30d)"
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


def _models(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


KEY_COLUMNS = (
    "id",
    "role",
    "label",
    "status",
    "expiresAt",
    "models",
    "rpm",
    "concurrency",
    "tokensPerDay",
    "priority",
)


def _key_row(key: KeyView) -> dict[str, Any]:
    row = dump(key)
    row["models"] = ",".join(key.models) if key.models is not None else "*"
    return row


def _create(client: AdminClient, args: argparse.Namespace) -> None:
    spec = KeySpec(
        role=Role(args.role),
        label=args.label,
        models=args.models,
        rpm=args.rpm,
        concurrency=args.concurrency,
        tokens_per_day=args.tokens_per_day,
        priority=Priority(args.priority),
        expires_in_seconds=args.expires,
    )
    key = client.call("POST", Paths.KEYS, KeyCreated, body=spec)
    if args.quiet:
        print(key.secret)
    elif args.output == "json":
        print_json(dump(key))
    else:
        print(f"id:     {key.id}")
        print(f"role:   {key.role.value}")
        print(f"secret: {key.secret}")
        print("The secret is shown this once: store it now.", file=sys.stderr)


def _list(client: AdminClient, args: argparse.Namespace) -> None:
    keys = client.call("GET", Paths.KEYS, KeyList)
    if args.output == "json":
        print_json([dump(k) for k in keys.data])
    else:
        print(table([_key_row(k) for k in keys.data], KEY_COLUMNS))


def _get(client: AdminClient, args: argparse.Namespace) -> None:
    key = client.call("GET", Paths.KEY.format(key_id=args.id), KeyView)
    if args.output == "json":
        print_json(dump(key))
    else:
        for name, value in _key_row(key).items():
            print(f"{name + ':':14} {value}")


def _revoke(client: AdminClient, args: argparse.Namespace) -> None:
    key = client.call("DELETE", Paths.KEY.format(key_id=args.id), KeyView)
    if args.output == "json":
        print_json(dump(key))
    else:
        print(f"revoked {key.id} ({key.label}) at {key.revoked_at}")


USAGE_COLUMNS = (
    "key",
    "label",
    "date",
    "requests",
    "promptTokens",
    "completionTokens",
    "errors",
    "refused",
)


def _usage(client: AdminClient, args: argparse.Namespace) -> None:
    params = {"days": args.days}
    if args.id:
        keys = [client.call("GET", Paths.KEY.format(key_id=args.id), KeyView)]
    else:
        keys = client.call("GET", Paths.KEYS, KeyList).data
    labels = {k.id: k.label for k in keys}
    views = [
        client.call("GET", Paths.KEY_USAGE.format(key_id=k.id), UsageView, params=params)
        for k in keys
    ]
    if args.output == "json":
        print_json([dump(v) for v in views])
        return
    rows = [
        {"key": v.key_id, "label": labels.get(v.key_id), **dump(day)}
        for v in views
        for day in v.days
    ]
    print(table(rows, USAGE_COLUMNS))


def add_commands(commands: Any) -> None:
    """Add `keys` and its subcommands to the `natrelay` parser's subcommands."""
    keys = commands.add_parser(
        "keys",
        help="manage the relay's keys (admin)",
        description="Create, list, read and revoke keys, and read their usage. Needs an admin "
        "token.",
    )
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    create = sub.add_parser("create", help="create a key and print its secret (once)")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--label", required=True, help="who or what the key is for")
    create.add_argument(
        "--models", type=_models, metavar="A,B,GLOB*", help="allowed models (default: all)"
    )
    create.add_argument("--rpm", type=int, metavar="N", help="requests per minute")
    create.add_argument("--concurrency", type=int, metavar="N", help="requests in flight")
    create.add_argument("--tokens-per-day", type=int, metavar="N", help="token budget per UTC day")
    create.add_argument(
        "--priority",
        choices=[p.value for p in Priority],
        default=Priority.INTERACTIVE.value,
        help="the class its requests queue in: interactive work goes before batch work "
        "(default: interactive)",
    )
    create.add_argument("--expires", type=duration, metavar="DURATION", help="e.g. 30d, 12h")
    create.add_argument("--quiet", "-q", action="store_true", help="print the secret alone")
    common_options(create)
    create.set_defaults(run=_create)
    listing = sub.add_parser("list", help="list the keys (no secrets)")
    common_options(listing)
    listing.set_defaults(run=_list)
    get = sub.add_parser("get", help="show one key")
    get.add_argument("id")
    common_options(get)
    get.set_defaults(run=_get)
    revoke = sub.add_parser("revoke", help="revoke a key (everywhere within 30 s)")
    revoke.add_argument("id")
    common_options(revoke)
    revoke.set_defaults(run=_revoke)
    usage = sub.add_parser("usage", help="usage per key and day")
    usage.add_argument("id", nargs="?", help="one key (default: every key)")
    usage.add_argument("--days", type=int, default=7, help="how many days (default 7)")
    common_options(usage)
    usage.set_defaults(run=_usage)
