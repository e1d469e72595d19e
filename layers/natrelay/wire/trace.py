"""Trace context (W3C `traceparent`) as it travels client -> relay -> publisher -> backend,
and, when turned on, spans exported over OTLP (the OpenTelemetry SDK, an optional extra:
`pip install 'natrelay[otel]'`; never imported while tracing is off).

    traceparent: 00-<trace id: 32 hex>-<parent span id: 16 hex>-<flags: 2 hex>

Each hop keeps the trace id and names its own span as the parent of the next: the relay
takes a client's header (or starts a trace), the polled task carries the relay's span,
the publisher sends its own span to the backend. Every JSON log line of a request (relay)
or a task (publisher) carries the traceparent of its hop.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

HEADER = "traceparent"
_FORMAT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
# The traceparent of the hop this code runs in (a relay's request, a publisher's task):
# for its log lines, and for what it sends on (a task queued, a request to a backend).
current: ContextVar[str | None] = ContextVar("natrelay_traceparent", default=None)


@contextmanager
def within(traceparent: str) -> Iterator[None]:
    """Run the block as the hop of `traceparent` (`current`), and only the block."""
    token = current.set(traceparent)
    try:
        yield
    finally:
        current.reset(token)


def parse(value: str | None) -> tuple[str, str, str] | None:
    """(trace id, parent id, flags) of a valid traceparent; None for anything else (as
    W3C says: then start a new trace)."""
    found = _FORMAT.match(value.strip().lower()) if value and len(value) <= 512 else None
    if found is None:
        return None
    version, trace_id, parent_id, flags, rest = found.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"}:
        return None
    if set(parent_id) == {"0"}:
        return None
    return trace_id, parent_id, flags


def _hex(n: int) -> str:
    while True:
        value = os.urandom(n).hex()
        if set(value) != {"0"}:
            return value


def child(parent: str | None) -> str:
    """The traceparent of a new span under `parent` (its trace and flags, a new span
    id); a new trace when `parent` is missing or invalid."""
    parsed = parse(parent)
    if parsed is None:
        return f"00-{_hex(16)}-{_hex(8)}-00"
    trace_id, _, flags = parsed
    return f"00-{trace_id}-{_hex(8)}-{flags}"


def trace_id(traceparent: str | None) -> str | None:
    parsed = parse(traceparent)
    return parsed[0] if parsed else None


class TraceFields(logging.Filter):
    """Puts `current` on every log record (`traceparent`, for the JSON formatter)."""

    def filter(self, record: logging.LogRecord) -> bool:
        value = current.get()
        if value is not None and not hasattr(record, "traceparent"):
            record.traceparent = value
        return True


@dataclass
class Span:
    """A hop's span: its traceparent, and (exporting) the SDK's span to finish."""

    traceparent: str
    name: str
    attributes: dict[str, Any] = field(default_factory=dict)


_setup_lock = threading.Lock()
_tracers: dict[str, Any] = {}


def _tracer(service: str) -> Any:
    """The OpenTelemetry tracer of this process, set up once: spans batched to the OTLP
    HTTP endpoint of OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318)."""
    with _setup_lock:
        if service not in _tracers:
            from opentelemetry import trace  # noqa: PLC0415 - only when exporting
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )
            from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
            from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
            from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

            provider = TracerProvider(resource=Resource.create({"service.name": service}))
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            _tracers[service] = (provider, trace.get_tracer("natrelay", tracer_provider=provider))
        return _tracers[service]


class Tracing:
    """Spans of one process (`service`): when `export` is off, only the traceparent is
    made and carried (nothing is imported or sent); when on, each span is also exported
    over OTLP."""

    def __init__(self, service: str, *, export: bool = False) -> None:
        self.service = service
        self.export = export

    @contextmanager
    def span(self, name: str, parent: str | None, kind: str = "server") -> Iterator[Span]:
        """A span under `parent` (a traceparent, or None: a new trace); its name and
        attributes may change until it ends."""
        if not self.export:
            yield Span(child(parent), name)
            return
        from opentelemetry.trace import SpanKind, Status, StatusCode  # noqa: PLC0415
        from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
            TraceContextTextMapPropagator,
        )

        _, tracer = _tracer(self.service)
        propagator = TraceContextTextMapPropagator()
        context = propagator.extract({HEADER: parent}) if parse(parent) else None
        kinds = {"server": SpanKind.SERVER, "consumer": SpanKind.CONSUMER}
        with tracer.start_as_current_span(name, context=context, kind=kinds[kind]) as sdk_span:
            carrier: dict[str, str] = {}
            propagator.inject(carrier)
            mine = Span(carrier.get(HEADER) or child(parent), name)
            try:
                yield mine
            finally:
                sdk_span.update_name(mine.name)
                sdk_span.set_attributes(mine.attributes)
                if int(mine.attributes.get("http.response.status_code", 0)) >= 500:
                    sdk_span.set_status(Status(StatusCode.ERROR))

    def flush(self) -> None:
        """Send the spans held (the process is stopping)."""
        if self.export and self.service in _tracers:
            _tracers[self.service][0].force_flush()
