"""The relay `natrelay dev` runs, and what it says when it is up."""

from __future__ import annotations

from dataclasses import dataclass

from natrelay.settings import Settings
from natrelay.wire import Paths
from natrelay_infra.demo import DemoPublisher
from natrelay_infra.state import StateDir
from natrelay_infra.tables import TableNames


@dataclass(frozen=True)
class DevRelay:
    """The relay `natrelay dev` runs: its address, tables, tokens, settings and state."""

    url: str
    dynamodb: str
    tables: TableNames
    client_token: str
    publish_token: str
    admin_token: str
    settings: Settings
    state: StateDir | None = None
    embedded: bool = True


def _state_line(relay: DevRelay) -> str:
    if relay.state is None:
        return "in memory only (--ephemeral)" if relay.embedded else "in the given DynamoDB"
    kept = "kept across restarts; --ephemeral for a throwaway run"
    return f"{relay.state.path} ({kept})"


def print_banner(relay: DevRelay, publisher: DemoPublisher | None) -> None:
    """What `natrelay dev` says when it is up: where, the tokens, how to try it."""
    model = "echo" if publisher else "MODEL"
    body = f'{{"model": "{model}", "messages": [{{"role": "user", "content": "hello"}}]}}'
    lines = [
        f"natrelay dev: relay API at {relay.url}",
        f"  OpenAI base URL:  {relay.url}/v1",
        f"  client token:     {relay.client_token}",
        f"  publisher token:  {relay.publish_token}",
        f"  admin token:      {relay.admin_token}   (for `natrelay keys` and `natrelay llm`)"
        if relay.admin_token
        else "  admin token:      none (give one with --admin-token, or use a stored admin key)",
        f"  DynamoDB:         {relay.dynamodb} (tables {relay.tables.llms}, "
        f"{relay.tables.tasks}, {relay.tables.keys})",
        f"  console:          {relay.url}{Paths.CONSOLE}   (log in with the admin token)",
        f"  state:            {_state_line(relay)}",
    ]
    if publisher is not None:
        lines.append(f"publisher pid: {publisher.pid}")
    else:
        lines += [
            "",
            "Publish the LLM servers of this machine (Ollama, llama.cpp, LM Studio, vLLM):",
            f"  natrelay publish --detect --relay {relay.url} --token {relay.publish_token}",
            "or a backend of your choice (natrelay publish --config publisher.yaml):",
            f"  relay: {{url: {relay.url}, token: {relay.publish_token}}}",
            "  providers:",
            "    - {name: MODEL, type: openai, model: MODEL, baseUrl: http://127.0.0.1:8000/v1}",
        ]
    lines += [
        "",
        'Try it with curl (add "stream": true for server-sent events):',
        f"  curl -s {relay.url}/v1/chat/completions \\",
        f"    -H 'Authorization: Bearer {relay.client_token}' "
        "-H 'Content-Type: application/json' \\",
        f"    -d '{body}'",
        "",
        "or with the openai Python SDK (pip install openai):",
        "  from openai import OpenAI",
        f'  client = OpenAI(base_url="{relay.url}/v1", api_key="{relay.client_token}")',
        f'  reply = client.chat.completions.create(model="{model}", '
        'messages=[{"role": "user", "content": "hello"}])',
        "  print(reply.choices[0].message.content)",
        "",
        "Keys for a team (one per box, one per person; see README.md):",
        f"  NATRELAY_URL={relay.url} NATRELAY_ADMIN_TOKEN={relay.admin_token or '<admin>'} \\",
        "    natrelay keys create --role client --label alice",
        "",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(lines), flush=True)
