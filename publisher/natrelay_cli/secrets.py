"""`natrelay secrets put NAME`: a public row's API key, into a relay that keeps them
(`natrelay dev`; admin). The value comes from standard input, a prompt that does not echo,
or an environment variable — never from the command line, where `ps` and the shell's
history would show it.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from natrelay.wire import Paths, SecretPut, SecretView, secret_name
from natrelay_cli.admin import AdminClient, CommandError, connection
from natrelay_cli.exits import EXIT_USAGE


def _name(text: str) -> str:
    try:
        return secret_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _value(args: argparse.Namespace) -> str:
    if args.from_env:
        value = os.environ.get(args.from_env, "")
        if not value:
            raise CommandError(f"the environment variable {args.from_env} is empty", EXIT_USAGE)
        return value
    if sys.stdin.isatty():
        value = getpass.getpass(f"value of {args.name} (not echoed): ")
    else:
        value = sys.stdin.read().strip()
    if not value:
        raise CommandError("no value: pipe it in, type it at the prompt, or --from-env", EXIT_USAGE)
    return value


def _put(client: AdminClient, args: argparse.Namespace) -> None:
    body = SecretPut(value=_value(args))
    path = Paths.SECRET.format(name=args.name)
    view = client.call("PUT", path, SecretView, body=body)
    print(f"secret {view.name} {'created' if view.created else 'updated'}")


def add_commands(commands: Any) -> None:
    """Add `secrets put` to the `natrelay` parser's subcommands."""
    secrets = commands.add_parser(
        "secrets",
        help="put a public row's API key into the relay (natrelay dev; admin)",
        description="Store the API key a public row names (apiKey: {secretsManager: NAME}) "
        "where the relay reads it. `natrelay dev` keeps it with its state; a deployed relay "
        "only reads them (use `aws secretsmanager create-secret` there).",
    )
    sub = secrets.add_subparsers(dest="secrets_command", required=True, metavar="COMMAND")
    put = sub.add_parser(
        "put",
        help="create or change a secret (value from stdin, a prompt, or --from-env)",
        description="Create or change the secret NAME. The value is read from standard "
        "input when it is piped, else asked for without echo; never give it as an argument.",
    )
    put.add_argument("name", type=_name, help="e.g. natrelay/openai")
    put.add_argument("--from-env", metavar="VAR", help="read the value from this variable")
    connection(put)
    put.set_defaults(run=_put)
