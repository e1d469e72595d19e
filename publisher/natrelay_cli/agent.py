"""`natrelay agent ...`: read and manage the relay's agents (admin).

The same `--relay`/`NATRELAY_URL` and `--token`/`NATRELAY_ADMIN_TOKEN` as `natrelay llm`,
and the same YAML round trip: `get -o yaml | apply -f -` changes nothing (lifecycle
fields are ignored); a bad document is one line naming the file, document and field,
exit 2, and nothing is applied. A `systemPrompt: {file: PATH}` is read here, relative
to the YAML file, and sent as text.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from natrelay.wire import AgentApplyResult, AgentDocument, AgentList, AgentView, Paths
from natrelay_cli.admin import AdminClient, CommandError, dump, table
from natrelay_cli.exits import EXIT_USAGE
from natrelay_cli.llm import _print, _read, _refusal, documents, manage_commands

COLUMNS = ("name", "origin", "target", "status", "owner", "description")


def _list(client: AdminClient, args: argparse.Namespace) -> None:
    agents = client.call("GET", Paths.AGENTS, AgentList).data
    if args.output != "table":
        _print([dump(a) for a in agents], args.output)
        return
    lines = []
    for agent in agents:
        line = dump(agent)
        target = line["target"]
        line["target"] = f"model {target['model']}" if isinstance(target, dict) else target
        lines.append(line)
    print(table(lines, COLUMNS))


def _get(client: AdminClient, args: argparse.Namespace) -> None:
    _print(dump(client.call("GET", Paths.AGENT.format(name=args.name), AgentView)), args.output)


def _delete(client: AdminClient, args: argparse.Namespace) -> None:
    client.delete(Paths.AGENT.format(name=args.name))
    print(f"deleted {args.name} (its name is free)")


def _prompt_files(base: Path) -> Any:
    def prepare(doc: dict[str, Any], where: str) -> dict[str, Any]:
        prompt = doc.get("systemPrompt")
        if not (isinstance(prompt, dict) and set(prompt) == {"file"}):
            return doc
        path = base / Path(str(prompt["file"])).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(
                f"{where}: systemPrompt: cannot read {prompt['file']}: {exc.__class__.__name__}",
                EXIT_USAGE,
            ) from exc
        return {**doc, "systemPrompt": text}

    return prepare


def _apply(client: AdminClient, args: argparse.Namespace) -> None:
    source = "<stdin>" if args.file == "-" else args.file
    base = Path.cwd() if args.file == "-" else Path(args.file).parent
    docs, places = documents(_read(args.file), source, AgentDocument, _prompt_files(base))
    resp = client.send("POST", Paths.AGENTS_APPLY, {"documents": docs})
    if not resp.is_success:
        raise _refusal(resp, places)
    for applied in AgentApplyResult.model_validate(resp.json()).data:
        detail = f" ({', '.join(applied.changed)})" if applied.action == "updated" else ""
        print(f"{applied.name}: {applied.action}{detail}")


def add_commands(commands: Any) -> None:
    """Add `agent` and its subcommands to the `natrelay` parser's subcommands."""
    agent = commands.add_parser(
        "agent",
        help="list, read, apply and delete the relay's agents (admin)",
        description="Read and manage agents: a name that means a target (a row, or "
        "{model: …}), a system prompt and sampling defaults. Needs an admin token.",
    )
    manage_commands(
        agent,
        "agent_command",
        {"list": _list, "get": _get, "apply": _apply, "delete": _delete},
        {
            "list": "every agent: origin, target, status",
            "get": "one agent",
            "apply": "create or replace agents from YAML documents (all or none)",
            "delete": "delete an agent and release its name",
        },
        "Create or replace agents from YAML documents, each the whole agent. Lifecycle "
        "fields (status, owner, ...) are ignored: the output of `get -o yaml` applies as "
        "it is.",
    )
