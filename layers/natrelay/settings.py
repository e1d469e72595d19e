"""Settings from the environment (NATRELAY_*)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NATRELAY_", extra="ignore")

    llms_table: str = "natrelay-Llms"
    tasks_table: str = "natrelay-Tasks"
    dynamodb_endpoint: str | None = None
    region: str = Field(default="us-east-1")

    publish_token: SecretStr = SecretStr("")
    client_token: SecretStr = SecretStr("")

    heartbeat_timeout_seconds: float = Field(default=90, gt=0)
    inactive_retention_seconds: float = Field(default=4 * 3600, ge=0)
    result_retention_seconds: float = Field(default=3600, gt=0)
    # Synchronous requests give up after this long (API Gateway cuts at 30 s).
    request_timeout_seconds: float = Field(default=25, gt=0)
    # Streams end (with an error event naming the task) after this long.
    stream_timeout_seconds: float = Field(default=900, gt=0)
    # The sweep extends the lease of a live publisher's task up to this age, then fails
    # it: a poll answer lost on the way must not hold a task forever.
    max_task_seconds: float = Field(default=900, gt=0)
    lease_seconds: float = Field(default=60, gt=0)
    # Added to a recipe's maxWaitSeconds to make the wake marker's deadline.
    wake_margin_seconds: float = Field(default=15, ge=0)
    default_wake_seconds: float = Field(default=120, gt=0)
    # Long-poll re-checks: start fast after activity, back off while idle.
    poll_min_interval_seconds: float = Field(default=0.05, gt=0)
    poll_max_interval_seconds: float = Field(default=1.0, gt=0)
    # Wake waiting polls and clients in this process at once (long-lived mode).
    in_process_signals: bool = True
    max_body_bytes: int = Field(default=6 * 1024 * 1024, gt=0)
