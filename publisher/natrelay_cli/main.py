"""The `natrelay` command: `publish` (natrelay_publisher), `keys`, `llm`, `agent` and
`secrets` (the relay's admin API), and `dev` (natrelay_infra, from the `local` extras)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib import metadata

from natrelay_cli import admin, agent, keys, llm, publish, secrets
from natrelay_cli.exits import EXIT_USAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="natrelay", description="Publish LLM backends behind NAT to a natrelay relay."
    )
    parser.add_argument("--version", action="version", version=f"natrelay {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    publish.add_command(commands)
    commands.add_parser(
        "dev",
        help="run a local relay for development (needs the local extras: pip install '.[local]')",
        add_help=False,
    )
    keys.add_commands(commands)
    llm.add_commands(commands)
    agent.add_commands(commands)
    secrets.add_commands(commands)
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
    if options.command in ("keys", "llm", "agent", "secrets"):
        return admin.run(options)
    return publish.run(options)


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
