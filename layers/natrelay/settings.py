"""Settings from the environment (NATRELAY_*)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# How the relay runs: `lambda`, one request per process at a time (AWS Lambda: nothing in
# memory outlives a request, waiters re-read DynamoDB), or `server`, one long-lived
# process serving many at once (natrelay dev, a container: in-process wake-ups, the fast
# path, writes batched behind the answers).
Mode = Literal["lambda", "server"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NATRELAY_", extra="ignore")

    # Read by the composition root alone (natrelay.service.assembly), which builds the
    # relay the mode calls for; nothing else asks.
    mode: Mode = "server"

    llms_table: str = "natrelay-Llms"
    tasks_table: str = "natrelay-Tasks"
    # Keys, their usage and the names each publisher key owns.
    keys_table: str = "natrelay-Keys"
    dynamodb_endpoint: str | None = None
    region: str = Field(default="us-east-1")

    # The simple mode: one shared token per role (empty: off). The admin token is the
    # first admin credential; on AWS all three come from the secret named below.
    publish_token: SecretStr = SecretStr("")
    client_token: SecretStr = SecretStr("")
    admin_token: SecretStr = SecretStr("")
    # An AWS Secrets Manager secret (JSON: adminToken, clientToken, publishToken) read
    # once at start; its values fill the tokens above that are not set.
    secret_arn: str | None = None
    # Public rows: where their API keys are read (Secrets Manager and SSM; None: AWS
    # itself; moto's endpoint locally), how long a key read is reused, and how long a
    # call to an upstream may wait for it (a row's timeoutSeconds overrides it).
    secrets_endpoint: str | None = None
    secret_cache_seconds: float = Field(default=300, ge=0)
    # Let admins put those API keys through the relay (PUT /api/v1/secrets/{name},
    # `natrelay secrets put`): natrelay dev does, for its embedded moto. On AWS the
    # relay's role may only read them: create them with the AWS CLI.
    secrets_writable: bool = False
    upstream_timeout_seconds: float = Field(default=120, gt=0)
    # The names the relay answers for (besides any IP address); others get 400 before
    # anything reads them (DNS rebinding). Comma-separated; empty: every host.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Cookies of the relay's pages (the console's session) are Secure: sent over
    # https only. Off only where the relay is reached over plain http (natrelay dev).
    cookie_secure: bool = True
    # How long a process trusts a stored key it verified; revocation and expiry take
    # effect everywhere within this time.
    key_cache_seconds: float = Field(default=15, ge=0, le=30)

    # Names (and aliases) one publisher key may own at once; an admin's release of one
    # (natrelay llm delete) makes room.
    max_names_per_key: int = Field(default=256, ge=1)
    heartbeat_timeout_seconds: float = Field(default=90, gt=0)
    # Liveness of claimed work (docs/relay.md, "Failover"): a publisher running tasks
    # proves it lives this often (a work beat: one DynamoDB write), and one silent for
    # the window loses them: each task that sent nothing goes back to its pool's queue,
    # a stream that did ends with `publisher_lost`. Idle publishers keep the slow beat.
    work_beat_seconds: float = Field(default=2.5, gt=0)
    work_window_seconds: float = Field(default=10, gt=0)
    inactive_retention_seconds: float = Field(default=4 * 3600, ge=0)
    result_retention_seconds: float = Field(default=3600, gt=0)
    # A synchronous request waits this long for its answer, then gives up (504) and is
    # cancelled. A long-lived relay waits as long as its clients do; the deployment's
    # API Gateway route sets 25 (it cuts requests at 30 s), and names in its 504 the URL
    # that has no such cap (its StreamUrl) and how long that one waits.
    request_timeout_seconds: float = Field(default=600, gt=0)
    long_request_url: str | None = None
    long_request_timeout_seconds: float = Field(default=840, gt=0)
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
    # The mode's old name (NATRELAY_IN_PROCESS_SIGNALS): false is lambda, true is server.
    # Read into `mode` when that is not given, then cleared.
    in_process_signals: bool | None = None
    # Server mode only: hand a request to a poll waiting in this process in memory and
    # write its record behind the answer (docs/relay.md, "The fast path"). Turn off when
    # several relay processes share the tables behind one address: a publisher's posts
    # must reach the process that handed it the task.
    fast_path: bool = True
    # Server mode only: the records of requests answered on the fast path, and the
    # usage of keys without limits, are written in batches at most this long after the
    # answer (a process that dies loses at most this much bookkeeping, never an answer).
    record_batch_seconds: float = Field(default=0.1, gt=0, le=5)
    # Server mode only: sweep this often inside the API process, on its event loop
    # (sharing its wake-ups and the tasks it holds in memory); 0: no sweeps here
    # (Lambda runs the SweeperFunction on a schedule).
    sweep_interval_seconds: float = Field(default=0, ge=0)
    # Server mode only: how long a row read on the client's path is reused (every
    # write of this process to the rows empties the cache at once; 0: off).
    row_cache_seconds: float = Field(default=1.0, ge=0, le=10)
    # Lambda mode (no in-process wake-ups): a client's wait re-reads DynamoDB at this pace
    # from the task's claim (brisk: a fast answer comes tens of ms later), growing by this
    # factor.
    wait_brisk_interval_seconds: float = Field(default=0.02, gt=0)
    wait_brisk_growth: float = Field(default=1.25, ge=1)
    # The doorbell (docs/protocol.md): the URL publishers connect to (ws:// or wss://),
    # announced in every SessionResponse; and the API Gateway management endpoint
    # (https://<api>.execute-api.<region>.amazonaws.com/<stage>) that rings them. Without
    # an endpoint, rings go to the doorbell WebSockets this process holds itself.
    doorbell_url: str | None = None
    doorbell_endpoint: str | None = None
    # Where this process serves the doorbell itself: connections older than this are
    # closed, as API Gateway does at 2 hours (the publisher reconnects before).
    doorbell_max_connection_seconds: float = Field(default=7200, gt=0)
    max_body_bytes: int = Field(default=6 * 1024 * 1024, gt=0)
    # Pools: requests wait in a pool's queue while every member is busy, at most this
    # many (beyond it, 429 queue_full; 0: no limit, and no queue read per request), ...
    max_queue_depth: int = Field(default=1000, ge=0)
    # ... each at most this long (0: the request's own budget), then 503 queue_timeout.
    max_queue_wait_seconds: float = Field(default=0, ge=0)
    # A request that waits for a wake (every member of its pool asleep) is held up to the
    # wake's own window, but never longer than this (API Gateway cuts at 30 s: the API
    # function sets 25).
    max_hold_seconds: float = Field(default=900, gt=0)
    # A stream with no chunk yet answers 200 after a while anyway (queued, or waiting for a
    # wake) and sends an SSE comment this often, so idle-cutting proxies never drop it.
    stream_keepalive_seconds: float = Field(default=15, gt=0)
    # Priority classes (service.dispatch): a batch request queued at t sorts as an
    # interactive one queued at t + this; so interactive work goes first, and batch work
    # that has waited this long goes before anything newer (it is never starved).
    batch_aging_seconds: float = Field(default=60, ge=0, le=86_400)
    # Affinity (service.affinity): a request continuing a conversation waits up to this
    # long for the member that ran its last turn (its prefix cache holds the history)
    # before any member takes it (0: off); conversations are remembered this long.
    affinity_wait_seconds: float = Field(default=2.0, ge=0, le=60)
    affinity_ttl_seconds: float = Field(default=600, gt=0, le=86_400)
    # Capacity-aware dispatch (service.speeds): a member much slower than its pool's
    # fastest gets new work only once it has waited what the slow one takes more.
    dispatch_by_speed: bool = True
    # Wake one more hibernating member when the oldest request has waited this long
    # with every active member busy (0: off).
    wake_after_queue_seconds: float = Field(default=0, ge=0)
    # Count every request per row and hour (and minute) for the console's overview and
    # charts (one DynamoDB write per request in Lambda mode; in server mode, one per row
    # every 10 s from each process; off: the console shows no counts or charts).
    row_stats: bool = True
    # The console's request pages show the prompt and the answer (the first 4 KB of each)
    # only when this is on: off, an admin sees when and how a request ran, not what it said.
    console_show_text: bool = False
    # Logs: JSON lines with the request id (json), or human-readable (text).
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"
    # Traces: every request carries a W3C traceparent (the client's, or one made here) to
    # its publisher and backend and into its log lines; `otlp` also exports a span per
    # request over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (needs `natrelay[otel]`).
    tracing: Literal["off", "otlp"] = "off"
    # Metrics: off, prometheus (GET /metrics, server mode), or emf (CloudWatch, Lambda mode).
    metrics: Literal["off", "prometheus", "emf"] = "off"
    # Lets a scraper read GET /metrics without an admin key (empty: admins only).
    metrics_token: SecretStr = SecretStr("")
    # Long-polls one session may have waiting at once in one process; more get 429.
    max_polls_per_session: int = Field(default=4, ge=1)
    # What one waiter (a poll, a client) keeps of in-process hints it has not taken yet;
    # past either cap hints are dropped (it re-reads DynamoDB, which is the truth).
    signal_buffer_hints: int = Field(default=64, ge=0)
    signal_buffer_bytes: int = Field(default=1024 * 1024, ge=0)

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: Any) -> Any:
        """`a.example,b.example` (or a JSON list) from the environment."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [h.strip() for h in text.split(",") if h.strip()]
        return value

    @model_validator(mode="after")
    def _work_window(self) -> Settings:
        if self.work_window_seconds < 2 * self.work_beat_seconds:
            raise ValueError(
                f"NATRELAY_WORK_WINDOW_SECONDS ({self.work_window_seconds:g}) must be at least "
                f"twice NATRELAY_WORK_BEAT_SECONDS ({self.work_beat_seconds:g}): one late beat "
                "must not cost a publisher its tasks"
            )
        return self

    @model_validator(mode="after")
    def _old_mode_name(self) -> Settings:
        if self.in_process_signals is not None:
            old: Mode = "server" if self.in_process_signals else "lambda"
            if "mode" in self.model_fields_set and self.mode != old:
                raise ValueError(
                    f"NATRELAY_IN_PROCESS_SIGNALS={str(self.in_process_signals).lower()} "
                    f"contradicts NATRELAY_MODE={self.mode}; set NATRELAY_MODE alone"
                )
            self.mode = old
            self.in_process_signals = None
        return self
