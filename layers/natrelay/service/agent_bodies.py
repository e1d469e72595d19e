"""What an agent does to a request: its system prompt first, each default the request
leaves unset filled in, and its target's name as the model (the answer names the agent).

Each API says it its own way: chat puts the prompt in a system message before the
others; responses in `instructions` (before the request's own); messages in `system`
(before the request's own, a text block before its blocks). Defaults are chat's field
names; responses and messages take those they have, under their names there.
"""

from __future__ import annotations

from typing import Any

from natrelay.store import AgentRecord
from natrelay.types import JsonObject
from natrelay.wire import Endpoint

# Where each API takes a chat default (absent: the API has no such field).
_RENAMED: dict[Endpoint, dict[str, str]] = {
    Endpoint.CHAT: {},
    Endpoint.RESPONSES: {
        "temperature": "temperature",
        "top_p": "top_p",
        "max_tokens": "max_output_tokens",
        "max_completion_tokens": "max_output_tokens",
    },
    Endpoint.MESSAGES: {
        "temperature": "temperature",
        "top_p": "top_p",
        "max_tokens": "max_tokens",
        "max_completion_tokens": "max_tokens",
        "stop": "stop_sequences",
    },
}
AGENT_ENDPOINTS = frozenset(_RENAMED)


def _prompted(endpoint: Endpoint, body: JsonObject, prompt: str) -> JsonObject:
    if endpoint is Endpoint.CHAT:
        return {**body, "messages": [{"role": "system", "content": prompt}, *body["messages"]]}
    if endpoint is Endpoint.RESPONSES:
        own = body.get("instructions")
        return {**body, "instructions": f"{prompt}\n\n{own}" if own else prompt}
    own = body.get("system")
    if isinstance(own, list):
        return {**body, "system": [{"type": "text", "text": prompt}, *own]}
    return {**body, "system": f"{prompt}\n\n{own}" if own else prompt}


def _default(endpoint: Endpoint, field: str, value: Any) -> tuple[str, Any] | None:
    renamed = _RENAMED[endpoint]
    if endpoint is Endpoint.CHAT:
        return field, value
    if field not in renamed:
        return None
    if renamed[field] == "stop_sequences" and isinstance(value, str):
        value = [value]
    return renamed[field], value


def dressed(agent: AgentRecord, endpoint: Endpoint, body: JsonObject, target: str) -> JsonObject:
    """The request as the agent sends it to its target row `target` (a new dict)."""
    out = dict(body)
    if agent.system_prompt:
        out = _prompted(endpoint, out, agent.system_prompt)
    for field, value in agent.defaults.items():
        named = _default(endpoint, field, value)
        if named is not None and out.get(named[0]) is None:
            out[named[0]] = named[1]
    out["model"] = target
    return out
