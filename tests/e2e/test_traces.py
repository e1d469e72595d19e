"""Spans exported over OTLP (NATRELAY_TRACING=otlp, a publisher's `tracing: otlp`) to a
collector on 127.0.0.1: the relay's span for a request is a child of the client's, the
publisher's span for its task a child of the relay's (and the parent of its request to
the backend and of its posts back to the relay), all in the client's trace."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from natrelay.wire import Paths
from natrelay_infra.moto_server import MotoProcess
from tests.publisher.running import publisher_config, start_publisher, wait_rows
from tests.support.backend import FakeBackend
from tests.support.net import serve, wait_until
from tests.support.stack import running_stack

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


@dataclass(frozen=True)
class Exported:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str


class Collector:
    """An OTLP/HTTP trace receiver (protobuf), keeping what it was sent."""

    def __init__(self) -> None:
        self.spans: list[Exported] = []

    async def _traces(self, request: Request) -> Response:
        sent = ExportTraceServiceRequest.FromString(await request.body())
        for resource in sent.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource.resource.attributes}
            for scope in resource.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        Exported(
                            attrs.get("service.name", ""),
                            span.name,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                        )
                    )
        return Response(b"", media_type="application/x-protobuf")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/traces", self._traces, methods=["POST"])])

    def of(self, service: str) -> list[Exported]:
        return [s for s in self.spans if s.service == service and s.trace_id == TRACE_ID]


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Collector]:
    found = Collector()
    with serve(found.app()) as url:
        # the relay and the publisher processes inherit these (the OTel SDK's own names)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        yield found


def test_spans_of_a_request_reach_the_collector(
    moto_server: MotoProcess, collector: Collector, tmp_path: Path
) -> None:
    backend = FakeBackend()
    with (
        serve(backend.app()) as url,
        running_stack(moto_server.endpoint, heartbeat_timeout_seconds=5, tracing="otlp") as stack,
    ):
        provider = {"name": "traced", "type": "openai", "baseUrl": f"{url}/v1", "model": "m1"}
        config = {**publisher_config(stack, tmp_path, [provider]), "tracing": "otlp"}
        publisher = start_publisher(config, tmp_path)
        try:
            wait_rows(stack, {"traced": "active"})
            answer = httpx.post(
                f"{stack.url}{Paths.CHAT}",
                headers={
                    "Authorization": f"Bearer {stack.client_token}",
                    "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01",
                },
                json={"model": "traced", "messages": [{"role": "user", "content": "x"}]},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            chat = f"POST {Paths.CHAT}"
            [relay_span] = wait_until(
                lambda: [s for s in collector.of("natrelay-relay") if s.name == chat],
                30,
                lambda: f"no relay span: {collector.spans}",
            )
            [task_span] = wait_until(
                lambda: collector.of("natrelay-publisher"),
                30,
                lambda: f"no publisher span: {collector.spans}",
            )
            # the publisher's posts for the task (its result) are spans under its own
            posts = wait_until(
                lambda: [
                    s for s in collector.of("natrelay-relay") if s.parent_id == task_span.span_id
                ],
                30,
                lambda: f"no post of the task: {collector.spans}",
            )
        finally:
            publisher.stop()
    assert relay_span.parent_id == CLIENT_SPAN
    assert all(p.name.startswith("POST /api/v1/") for p in posts), posts
    assert task_span.name == "infer traced" and task_span.parent_id == relay_span.span_id
    [at_backend] = backend.traceparents
    assert at_backend == f"00-{TRACE_ID}-{task_span.span_id}-01"
