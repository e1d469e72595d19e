"""`agents:` in the publisher's config: named assistants (a target, a system prompt,
sampling defaults) published with the session, beside the providers.

```yaml
agents:
  - name: support-bot
    target: gemma                  # a provider's name, or {model: llama3.1:8b}
    systemPrompt: {file: prompts/support.md}   # or the text itself
    defaults: {temperature: 0.2, max_tokens: 512}
    description: first-line support
```

A prompt file is read when the config is (relative to the config file), so a missing
or unreadable one is a config error naming the file and field, before anything runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel

from natrelay.wire import AgentDefaults, AgentSpec, LlmName, ModelTarget
from natrelay.wire.agents import MAX_SYSTEM_PROMPT


class PromptFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str = Field(min_length=1)


class AgentConfig(BaseModel):
    """One entry of `agents[]`."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    name: LlmName
    target: LlmName | ModelTarget
    system_prompt: str | PromptFile | None = None
    defaults: AgentDefaults = Field(default_factory=AgentDefaults)
    description: str | None = Field(default=None, max_length=2048)

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: Any) -> Any:
        if isinstance(value, dict) and set(value) != {"model"}:
            raise ValueError("give a provider's name (gemma) or a backend model ({model: …})")
        return value

    @field_validator("system_prompt")
    @classmethod
    def _read(cls, value: str | PromptFile | None, info: ValidationInfo) -> str | None:
        if not isinstance(value, PromptFile):
            return value
        config = (info.context or {}).get("path")
        path = Path(value.file).expanduser()
        if not path.is_absolute() and config is not None:
            path = Path(config).parent / path
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read {value.file}: {exc.__class__.__name__}") from exc
        if len(text) > MAX_SYSTEM_PROMPT:
            raise ValueError(f"{value.file} is over {MAX_SYSTEM_PROMPT} characters")
        return text

    def spec(self) -> AgentSpec:
        """What the relay is told of it."""
        prompt = self.system_prompt if isinstance(self.system_prompt, str) else None
        return AgentSpec(
            name=self.name,
            target=self.target,
            system_prompt=prompt,
            defaults=self.defaults,
            description=self.description,
        )
