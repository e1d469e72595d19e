"""What the admin commands (`natrelay keys`, `natrelay llm`) share: the relay's admin API
over httpx, their common options, one-line errors, and plain tables.

Every command reaches the relay from `--relay URL` (or NATRELAY_URL) with `--token`
(or NATRELAY_ADMIN_TOKEN). Errors are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from natrelay_cli.exits import EXIT_FAILED, EXIT_USAGE

TIMEOUT = httpx.Timeout(30.0, connect=10.0)

M = TypeVar("M", bound=BaseModel)


class CommandError(Exception):
    """A command failed; the message is the one line the user sees."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


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


def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as a plain aligned table (empty cells for missing values)."""
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def dump(model: BaseModel) -> dict[str, Any]:
    """A model as the relay sends it (camelCase, no empty fields)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


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


def common_options(parser: argparse.ArgumentParser) -> None:
    """Every `keys` command's options: where the relay is, the token, the output format."""
    connection(parser)
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")


def run(args: argparse.Namespace, *, transport: httpx.BaseTransport | None = None) -> int:
    """Run a parsed admin command (`natrelay keys ...`, `natrelay llm ...`, `natrelay
    secrets ...`); returns the exit code."""
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
