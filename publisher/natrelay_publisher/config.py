"""The publisher's YAML configuration, validated with pydantic (camelCase, unknown keys refused)."""

from __future__ import annotations

import difflib
import hashlib
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import httpx
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError

from natrelay.wire import MAX_ALIASES, MAX_WAIT_SECONDS, Endpoint, LlmName
from natrelay.wire.agents import MAX_AGENTS
from natrelay_publisher.agents import AgentConfig
from natrelay_publisher.errors import ConfigError, PluginError, field_path, yaml_reason
from natrelay_publisher.providers import PROVIDERS
from natrelay_publisher.providers.base import servable
from natrelay_publisher.recipes import RECIPES, RecipeConfig

SESSION_DIR = "~/.config/natrelay"


def default_session_file(config_path: str | Path) -> Path:
    """`~/.config/natrelay/session-<hash of the config file's absolute path>.json`: one
    session per config file, so two publishers on one host never share a session."""
    return session_file_for(str(Path(config_path).resolve()))


def session_file_for(key: str) -> Path:
    """`~/.config/natrelay/session-<hash of key>.json`: the session of what `key` names."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(SESSION_DIR).expanduser() / f"session-{digest}.json"


def _secret(value: Any) -> SecretStr:
    if isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str):
        name = value["env"]
        if name not in os.environ:
            raise PydanticCustomError(
                "secret", "environment variable {name} is not set", {"name": name}
            )
        value = os.environ[name]
    elif isinstance(value, dict) and set(value) == {"file"} and isinstance(value["file"], str):
        path = Path(value["file"]).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PydanticCustomError(
                "secret",
                "cannot read {path}: {reason}",
                {"path": str(path), "reason": exc.strerror or str(exc)},
            ) from exc
    if not isinstance(value, str):
        raise PydanticCustomError("secret", "Input should be a string, {env: NAME} or {file: PATH}")
    if not value:
        raise PydanticCustomError("secret", "the secret is empty")
    return SecretStr(value)


def _http_url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise PydanticCustomError("url", "not a valid URL: {reason}", {"reason": str(exc)}) from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise PydanticCustomError("url", "should be an http:// or https:// URL")
    return value.rstrip("/")


def _ws_url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise PydanticCustomError("url", "not a valid URL: {reason}", {"reason": str(exc)}) from exc
    if url.scheme not in ("ws", "wss") or not url.host:
        raise PydanticCustomError("url", "should be a ws:// or wss:// URL")
    return value


Secret = Annotated[SecretStr, PlainValidator(_secret)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
WsUrl = Annotated[str, AfterValidator(_ws_url)]


def field_error(loc: tuple[str | int, ...], message: str, value: Any = None) -> ValidationError:
    """A ValidationError for one field, so it is reported with the full path."""
    error = PydanticCustomError("invalid", message)
    return ValidationError.from_exception_data(
        "PublisherConfig", [InitErrorDetails(type=error, loc=loc, input=value)]
    )


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class DoorbellConfig(_Model):
    """The doorbell (docs/protocol.md): a WebSocket the relay rings when work is queued,
    so the publisher polls only then (and every `safetyPollSeconds`) instead of holding
    a long-poll. Used when the relay offers one (or `url` names it); long-poll otherwise,
    and whenever the WebSocket cannot be kept up."""

    enabled: bool = True
    # Default: the URL the relay announces when the publisher registers.
    url: WsUrl | None = None
    # Poll this often anyway (a lost ring waits at most this long); also the heartbeat,
    # so never less often than 2/3 of the relay's heartbeat timeout.
    safety_poll_seconds: float = Field(default=60, gt=0, le=3600)
    # A message this often keeps the connection open (API Gateway closes it after 10
    # idle minutes); a connection that does not answer it is replaced.
    keepalive_seconds: float = Field(default=300, gt=0, le=540)
    # Open the next connection this long after the last (API Gateway ends one at 2 h).
    max_connection_seconds: float = Field(default=6600, gt=0, le=7140)
    # While the WebSocket cannot be opened: long-poll, and try it again after at most this.
    retry_seconds: float = Field(default=300, gt=0, le=3600)


class RelayConfig(_Model):
    url: HttpUrl
    token: Secret
    # None: one derived from the config file's path (see default_session_file).
    session_file: Path | None = None
    heartbeat_seconds: float = Field(default=30, gt=0, le=3600)
    poll_wait_seconds: float = Field(default=MAX_WAIT_SECONDS, gt=0, le=MAX_WAIT_SECONDS)
    shutdown_grace_seconds: float = Field(default=30, ge=0, le=3600)
    doorbell: DoorbellConfig = Field(default_factory=DoorbellConfig)

    @field_validator("url")
    @classmethod
    def _not_the_openai_url(cls, value: str) -> str:
        if value.endswith("/v1"):
            raise PydanticCustomError(
                "url",
                "ends in /v1, the OpenAI base URL clients use; the publisher wants the relay's "
                "own URL: drop /v1 ({root})",
                {"root": value.removesuffix("/v1")},
            )
        return value

    @field_validator("session_file")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()


class ProviderConfig(_Model):
    """One entry of `providers[]`; plugins read it as `ProviderSettings`."""

    name: LlmName
    type: str
    base_url: HttpUrl | None = None
    model: str | None = Field(default=None, min_length=1, max_length=256)
    api_key: Secret | None = None
    tier: str | None = Field(default=None, max_length=64)
    description: str | None = Field(default=None, max_length=2048)
    publish: bool = True
    max_concurrency: int = Field(default=4, ge=1, le=256)
    # How long the backend may stay silent: no answer, or no stream data, for this long.
    timeout_seconds: float = Field(default=600, gt=0, le=3600)
    # How long an idle backend's availability check may take (more when it was slow
    # lately; a busy backend is not asked: natrelay_publisher.health).
    health_timeout_seconds: float = Field(default=5, gt=0, le=60)
    options: dict[str, Any] = Field(default_factory=dict)
    wake: RecipeConfig | None = None
    sleep: RecipeConfig | None = None
    sleep_after_idle_seconds: float | None = Field(default=None, gt=0)
    # The APIs to publish (default: what the type serves by default); the relay refuses
    # the others without asking.
    endpoints: list[Endpoint] | None = Field(default=None, min_length=1)
    # Other names clients may call it by (owned by the publisher key, like `name`).
    aliases: list[LlmName] = Field(default_factory=list, max_length=MAX_ALIASES)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        try:
            PROVIDERS.find(value)
        except PluginError as exc:
            raise PydanticCustomError("plugin", "{reason}", {"reason": str(exc)}) from exc
        return value

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if isinstance(info.data.get("type"), str):
            PROVIDERS.find(info.data["type"]).Options.model_validate(value)
        return value

    @field_validator("wake", "sleep", mode="before")
    @classmethod
    def _recipe(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or isinstance(value, RecipeConfig):
            return value
        if not isinstance(value, dict):
            raise PydanticCustomError("recipe", "should be a mapping with a `type`")
        type_name = value.get("type")
        if not isinstance(type_name, str):
            raise field_error(("type",), "Field required", type_name)
        try:
            recipe = RECIPES.find(type_name)
        except PluginError as exc:
            raise field_error(("type",), str(exc), type_name) from exc
        if info.field_name == "sleep" and not recipe.can_sleep:
            raise field_error(("type",), f"{type_name} cannot be a sleep recipe", type_name)
        return recipe.Config.model_validate(value)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        plugin = PROVIDERS.find(self.type)
        for name in plugin.requires:
            if getattr(self, name) is None:
                raise field_error((to_camel(name),), f"Field required for type {self.type}")
        if self.endpoints is not None:
            unserved = [e.value for e in self.endpoints if e not in servable(plugin)]
            if unserved:
                raise field_error(
                    ("endpoints",), f"type {self.type} cannot serve {', '.join(unserved)}"
                )
        if self.sleep_after_idle_seconds is not None and self.sleep is None:
            raise field_error(("sleepAfterIdleSeconds",), "requires a `sleep` recipe")
        if self.sleep is not None and self.wake is None:
            raise field_error(("sleep",), "requires a `wake` recipe (who would wake it up?)")
        for field in ("wake", "sleep"):
            recipe: RecipeConfig | None = getattr(self, field)
            if recipe is not None:
                try:
                    setattr(self, field, recipe.for_provider(self))
                except ValidationError as exc:
                    raise ValidationError.from_exception_data(
                        "PublisherConfig",
                        [
                            InitErrorDetails(
                                type=PydanticCustomError(e["type"], e["msg"]),
                                loc=(field, *e["loc"]),
                                input=e["input"],
                            )
                            for e in exc.errors()
                        ],
                    ) from exc
        return self


class PublisherConfig(_Model):
    relay: RelayConfig
    providers: list[ProviderConfig] = Field(min_length=1)
    agents: list[AgentConfig] = Field(default_factory=list, max_length=MAX_AGENTS)
    # `otlp`: export a span per task over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (needs
    # `pip install 'natrelay[otel]'`); off, the trace context still travels and is logged.
    tracing: Literal["off", "otlp"] = "off"

    @model_validator(mode="after")
    def _names(self) -> Self:
        seen: set[str] = set()
        for index, provider in enumerate(self.providers):
            if provider.name in seen:
                raise field_error(("providers", index, "name"), f"duplicate name {provider.name!r}")
            seen.add(provider.name)
        for index, provider in enumerate(self.providers):
            for i, alias in enumerate(provider.aliases):
                if alias in seen:
                    raise field_error(
                        ("providers", index, "aliases", i),
                        f"{alias!r} is already a name or an alias here",
                    )
                seen.add(alias)
        for index, agent in enumerate(self.agents):
            if agent.name in seen:
                raise field_error(("agents", index, "name"), f"{agent.name!r} is already a name")
            seen.add(agent.name)
        if not any(provider.publish for provider in self.providers):
            raise field_error(("providers",), "no provider has `publish: true`")
        return self

    @model_validator(mode="after")
    def _session_file(self, info: ValidationInfo) -> Self:
        if self.relay.session_file is None:
            path = (info.context or {}).get("path")
            if path is None:  # not read from a file: what it publishes, and where
                names = ",".join(sorted(p.name for p in self.published))
                path = f"{self.relay.url} {names}"
            self.relay.session_file = default_session_file(path)
        return self

    @property
    def session_file(self) -> Path:
        assert self.relay.session_file is not None  # set by _session_file
        return self.relay.session_file

    @property
    def published(self) -> list[ProviderConfig]:
        return [provider for provider in self.providers if provider.publish]


def _keys_at(data: Any, loc: tuple[str | int, ...]) -> list[str] | None:
    """The keys the mapping at `loc` may have, or None when that is not known here."""
    model: type[BaseModel] | None = None
    if loc == ():
        model = PublisherConfig
    elif loc == ("relay",):
        model = RelayConfig
    elif len(loc) == 2 and loc[0] == "agents":
        model = AgentConfig
    elif len(loc) >= 2 and loc[0] == "providers" and isinstance(loc[1], int):
        try:
            provider = data["providers"][loc[1]]
            if len(loc) == 2:
                model = ProviderConfig
            elif loc[2:] == ("options",):
                model = PROVIDERS.find(provider["type"]).Options
            elif len(loc) == 3 and loc[2] in ("wake", "sleep"):
                model = RECIPES.find(provider[loc[2]]["type"]).Config
        except (LookupError, TypeError, PluginError):
            return None
    if model is None:
        return None
    return [field.alias or name for name, field in model.model_fields.items()]


def _unknown_key(key: str, known: list[str]) -> str:
    """`unknown key; did you mean baseUrl?`, or the keys there are."""

    def plain(name: str) -> str:
        return name.lower().replace("_", "").replace("-", "")

    by_plain = {plain(name): name for name in known}
    match = by_plain.get(plain(key)) or next(
        iter(difflib.get_close_matches(key, known, n=1, cutoff=0.6)), None
    )
    if match is None:
        match = next((n for n in known if plain(n).startswith(plain(key))), None)
    if match is not None:
        return f"unknown key; did you mean {match}?"
    return f"unknown key (known: {', '.join(known) or 'none'})"


def format_errors(source: str, exc: ValidationError, data: Any = None) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            known = _keys_at(data, error["loc"][:-1])
            if known is not None:
                message = _unknown_key(str(error["loc"][-1]), known)
        path = field_path(error["loc"])
        lines.append(f"{source}: {path}: {message}" if path else f"{source}: {message}")
    return "\n".join(lines)


def parse_config(
    data: Any, source: str = "config", *, path: str | Path | None = None
) -> PublisherConfig:
    """Validate already-parsed YAML (read from `path`, if from a file); raises ConfigError
    naming the source, field and reason."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: should be a mapping with `relay` and `providers`")
    try:
        return PublisherConfig.model_validate(data, context={"path": path})
    except ValidationError as exc:
        raise ConfigError(format_errors(source, exc, data)) from exc


def load_config(path: str | Path) -> PublisherConfig:
    """Read and validate a config file; raises ConfigError naming the file, field and reason."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {yaml_reason(exc)}") from exc
    return parse_config(data, source, path=path)
