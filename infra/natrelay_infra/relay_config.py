"""The settings of a relay on given tables and tokens: for `natrelay dev`, the tests, the bench.

One place decides how a local relay is configured; a relay in this process takes the
`Settings` object, one in a child process the environment `settings_env` makes of it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import SecretStr

from natrelay.settings import Settings
from natrelay_infra.tables import TableNames


def relay_settings(
    dynamodb_endpoint: str,
    tables: TableNames,
    *,
    client_token: str,
    publish_token: str,
    admin_token: str = "",
    **fields: Any,
) -> Settings:
    """A relay on `tables` with these tokens; what is not given comes from NATRELAY_* as usual."""
    return Settings(
        dynamodb_endpoint=dynamodb_endpoint,
        llms_table=tables.llms,
        tasks_table=tables.tasks,
        keys_table=tables.keys,
        client_token=SecretStr(client_token),
        publish_token=SecretStr(publish_token),
        admin_token=SecretStr(admin_token),
        **fields,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment under which `Settings()` in a child process equals `settings`."""
    prefix = Settings.model_config.get("env_prefix", "")
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        env[f"{prefix}{name}".upper()] = _env_value(value)
    return env


def _env_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value)  # pydantic-settings reads complex fields as JSON
