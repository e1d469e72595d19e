"""The name a backend's model is published under, made from its model id.

A model id that is a valid name is its own name (`Qwen/Qwen2.5-7B-Instruct`,
`llama3.1:8b`), except that Ollama's `:latest` is dropped (`llama3:latest` is published
as `llama3`, with `llama3:latest` kept as an alias). A model file (`/models/qwen2.5-7b.gguf`,
what llama.cpp server lists) is named after the file, without its directory and suffix.
Anything else has each character a name cannot hold replaced by `-`. The id itself is kept
as an alias whenever it differs from the name and is a valid name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError

from natrelay.wire import LlmName

_NAME = TypeAdapter(LlmName)
_NOT_IN_A_NAME = re.compile(r"[^A-Za-z0-9._:/@-]+")
_MODEL_FILE = re.compile(r"\.(gguf|ggml|bin|safetensors|llamafile)$", re.IGNORECASE)
_MAX_NAME = 128


@dataclass(frozen=True)
class PublishedName:
    """How one model is published: its name, and the model id as an alias if it differs."""

    name: str
    aliases: tuple[str, ...] = ()


def valid_name(text: str) -> bool:
    """Whether the relay accepts `text` as a name (or an alias)."""
    try:
        _NAME.validate_python(text)
    except ValidationError:
        return False
    return True


def name_for(model_id: str) -> PublishedName | None:
    """The name `model_id` is published under, or None when nothing of it makes one."""
    name = model_id.strip()
    if name.endswith(":latest"):
        name = name.removesuffix(":latest")
    if _MODEL_FILE.search(name):
        name = _MODEL_FILE.sub("", name.replace("\\", "/").rsplit("/", 1)[-1])
    if not valid_name(name):
        name = _NOT_IN_A_NAME.sub("-", name)[:_MAX_NAME].strip("._:/@-")
    if not name or not valid_name(name):
        return None
    aliases = (model_id,) if model_id != name and valid_name(model_id) else ()
    return PublishedName(name, aliases)
