"""`natrelay keys ...`: manage a relay's keys and read their usage over its admin API.

Every command reaches the relay from `--relay URL` (or NATRELAY_URL) with `--token`
(or NATRELAY_ADMIN_TOKEN). Errors are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from natrelay.wire import KeyCreated, KeyList, KeySpec, KeyView, Paths, Role, UsageView

EXIT_FAILED = 1
EXIT_USAGE = 2
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_DURATION = re.compile(r"^(\d+)([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

M = TypeVar("M", bound=BaseModel)


class CommandError(Exception):
    """A command failed; the message is the one line the user sees."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


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


class AdminClient:
    """The relay's admin API over httpx; raises CommandError with a readable message."""

    def __init__(self, url: str, token: str, *, transport: httpx.BaseTransport | None = None):
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def delete(self, path: str) -> None:
        """DELETE something that answers 204."""
        try:
            resp = self._http.delete(path)
        except httpx.HTTPError as exc:
            raise CommandError(f"cannot reach the relay at {self.url}: {exc}") from exc
        if not resp.is_success:
            raise CommandError(f"the relay answered {resp.status_code}: {_message(resp)}")

    def send(self, method: str, path: str, payload: Any = None) -> httpx.Response:
        """The relay's answer as it is (CommandError only if it cannot be reached)."""
        try:
            return self._http.request(method, path, json=payload)
        except httpx.HTTPError as exc:
            raise CommandError(f"cannot reach the relay at {self.url}: {exc}") from exc

    def call(
        self,
        method: str,
        path: str,
        answer: type[M],
        *,
        body: BaseModel | None = None,
        params: dict[str, Any] | None = None,
    ) -> M:
        payload = None if body is None else body.model_dump(mode="json", by_alias=True)
        try:
            resp = self._http.request(method, path, json=payload, params=params)
        except httpx.HTTPError as exc:
            raise CommandError(f"cannot reach the relay at {self.url}: {exc}") from exc
        if not resp.is_success:
            raise CommandError(f"the relay answered {resp.status_code}: {_message(resp)}")
        try:
            return answer.model_validate(resp.json())
        except (ValueError, ValidationError) as exc:
            raise CommandError(
                f"{method} {path}: the relay's answer is not what this command expects "
                f"(is {self.url} a natrelay relay?)"
            ) from exc


def error_of(resp: httpx.Response) -> str:
    """What the relay said went wrong, on one line."""
    return f"the relay answered {resp.status_code}: {_message(resp)}"


def _message(resp: httpx.Response) -> str:
    try:
        error = resp.json().get("error")
    except (ValueError, AttributeError):
        return " ".join(resp.text.split())[:200] or resp.reason_phrase
    if isinstance(error, dict):
        param = f" ({error['param']})" if error.get("param") else ""
        return f"{error.get('message', '')}{param}"
    return str(error)


# --- output ------------------------------------------------------------------------


def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as a plain aligned table (empty cells for missing values)."""
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


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
)


def _key_row(key: KeyView) -> dict[str, Any]:
    row = _dump(key)
    row["models"] = ",".join(key.models) if key.models is not None else "*"
    return row


# --- commands ----------------------------------------------------------------------


def _create(client: AdminClient, args: argparse.Namespace) -> None:
    spec = KeySpec(
        role=Role(args.role),
        label=args.label,
        models=args.models,
        rpm=args.rpm,
        concurrency=args.concurrency,
        tokens_per_day=args.tokens_per_day,
        expires_in_seconds=args.expires,
    )
    key = client.call("POST", Paths.KEYS, KeyCreated, body=spec)
    if args.quiet:
        print(key.secret)
    elif args.output == "json":
        _print_json(_dump(key))
    else:
        print(f"id:     {key.id}")
        print(f"role:   {key.role.value}")
        print(f"secret: {key.secret}")
        print("The secret is shown this once: store it now.", file=sys.stderr)


def _list(client: AdminClient, args: argparse.Namespace) -> None:
    keys = client.call("GET", Paths.KEYS, KeyList)
    if args.output == "json":
        _print_json([_dump(k) for k in keys.data])
    else:
        print(table([_key_row(k) for k in keys.data], KEY_COLUMNS))


def _get(client: AdminClient, args: argparse.Namespace) -> None:
    key = client.call("GET", Paths.KEY.format(key_id=args.id), KeyView)
    if args.output == "json":
        _print_json(_dump(key))
    else:
        for name, value in _key_row(key).items():
            print(f"{name + ':':14} {value}")


def _revoke(client: AdminClient, args: argparse.Namespace) -> None:
    key = client.call("DELETE", Paths.KEY.format(key_id=args.id), KeyView)
    if args.output == "json":
        _print_json(_dump(key))
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
        _print_json([_dump(v) for v in views])
        return
    rows = [
        {"key": v.key_id, "label": labels.get(v.key_id), **_dump(day)}
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
    create.add_argument("--expires", type=duration, metavar="DURATION", help="e.g. 30d, 12h")
    create.add_argument("--quiet", "-q", action="store_true", help="print the secret alone")
    _output(create)
    create.set_defaults(run=_create)
    listing = sub.add_parser("list", help="list the keys (no secrets)")
    _output(listing)
    listing.set_defaults(run=_list)
    get = sub.add_parser("get", help="show one key")
    get.add_argument("id")
    _output(get)
    get.set_defaults(run=_get)
    revoke = sub.add_parser("revoke", help="revoke a key (everywhere within 30 s)")
    revoke.add_argument("id")
    _output(revoke)
    revoke.set_defaults(run=_revoke)
    usage = sub.add_parser("usage", help="usage per key and day")
    usage.add_argument("id", nargs="?", help="one key (default: every key)")
    usage.add_argument("--days", type=int, default=7, help="how many days (default 7)")
    _output(usage)
    usage.set_defaults(run=_usage)


def connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--relay", metavar="URL", default=os.environ.get("NATRELAY_URL"), help="or NATRELAY_URL"
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        default=os.environ.get("NATRELAY_ADMIN_TOKEN"),
        help="an admin key or token; or NATRELAY_ADMIN_TOKEN",
    )


def _output(parser: argparse.ArgumentParser) -> None:
    """Every command's common options: where the relay is, the token, the output format."""
    connection(parser)
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")


def run(args: argparse.Namespace, *, transport: httpx.BaseTransport | None = None) -> int:
    """Run a parsed `natrelay keys ...` command; returns the exit code."""
    if not args.relay:
        print("natrelay: no relay: pass --relay URL or set NATRELAY_URL", file=sys.stderr)
        return EXIT_USAGE
    if not args.token:
        print("natrelay: no admin token: pass --token or set NATRELAY_ADMIN_TOKEN", file=sys.stderr)
        return EXIT_USAGE
    if args.relay.rstrip("/").endswith("/v1"):
        root = args.relay.rstrip("/").removesuffix("/v1")
        print(
            f"natrelay: {args.relay} ends in /v1, the OpenAI base URL clients use; NATRELAY_URL "
            f"(--relay) is the relay's own URL: drop /v1 ({root})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    client = AdminClient(args.relay, args.token, transport=transport)
    command: Callable[[AdminClient, argparse.Namespace], None] = args.run
    try:
        command(client, args)
    except CommandError as exc:
        print(f"natrelay: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        print(f"natrelay: {field}: {first['msg']}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        client.close()
    return 0
