"""What the relay counts, and where it goes: nowhere (`off`), Prometheus exposition at
`GET /metrics` (`prometheus`, long-lived mode) or CloudWatch embedded metric format on
stdout (`emf`, Lambda: no API call, CloudWatch turns the log lines into metrics)."""

from __future__ import annotations

NAMESPACE = "natrelay"
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    """The metrics of a relay process. This base class drops everything (metrics off)."""

    def request(self, route: str, status: int, seconds: float) -> None:
        """A request ended (any route; `route` is its template, e.g. /v1/models)."""

    def error(self, code: str) -> None:
        """A request ended with an error body of this code."""

    def added_latency(self, seconds: float) -> None:
        """Time the relay added to a non-streamed inference (total minus the backend's)."""

    def first_token(self, seconds: float) -> None:
        """Time from a streamed request's arrival to its first chunk leaving the relay."""

    def wake(self, outcome: str, seconds: float | None = None) -> None:
        """A wake `started`, `succeeded` or `failed` (with how long it took)."""

    def publishers_online(self, sessions: int) -> None:
        """Publisher sessions with a live heartbeat (seen by the sweep)."""

    def queue(self, model: str, depth: int, oldest_seconds: float) -> None:
        """Tasks waiting for a model, and how long the oldest has waited."""

    def dynamodb_throttle(self, operation: str) -> None:
        """DynamoDB refused a request for capacity (botocore retries it)."""

    def flush(self) -> None:
        """Write out what was counted (EMF); nothing for the others."""

    def exposition(self) -> bytes | None:
        """The Prometheus text format, when this is the Prometheus sink."""
        return None


class PrometheusMetrics(Metrics):
    def __init__(self) -> None:
        # imported here: Lambda (EMF) never loads it
        from prometheus_client import (  # noqa: PLC0415
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
        )

        self.registry = CollectorRegistry()
        r = self.registry
        self._requests = Counter(
            "natrelay_requests", "Requests by route and status", ["route", "status"], registry=r
        )
        self._seconds = Histogram(
            "natrelay_request_seconds", "Request duration", ["route"], buckets=_SECONDS, registry=r
        )
        self._errors = Counter("natrelay_errors", "Error answers by code", ["code"], registry=r)
        self._added = Histogram(
            "natrelay_added_latency_seconds",
            "Time the relay added to a non-streamed inference",
            buckets=_SECONDS,
            registry=r,
        )
        self._ttft = Histogram(
            "natrelay_time_to_first_token_seconds",
            "Streamed request to first chunk",
            buckets=_SECONDS,
            registry=r,
        )
        self._wakes = Counter("natrelay_wakes", "Wakes by outcome", ["outcome"], registry=r)
        self._wake_seconds = Histogram(
            "natrelay_wake_seconds", "How long wakes took", buckets=_SECONDS, registry=r
        )
        self._online = Gauge(
            "natrelay_publishers_online", "Publisher sessions with a live heartbeat", registry=r
        )
        self._depth = Gauge("natrelay_queue_depth", "Tasks waiting", ["model"], registry=r)
        self._oldest = Gauge(
            "natrelay_queue_oldest_seconds", "Age of the oldest waiting task", ["model"], registry=r
        )
        self._throttles = Counter(
            "natrelay_dynamodb_throttles", "DynamoDB throttled requests", ["operation"], registry=r
        )

    def request(self, route: str, status: int, seconds: float) -> None:
        self._requests.labels(route, str(status)).inc()
        self._seconds.labels(route).observe(seconds)

    def error(self, code: str) -> None:
        self._errors.labels(code).inc()

    def added_latency(self, seconds: float) -> None:
        self._added.observe(seconds)

    def first_token(self, seconds: float) -> None:
        self._ttft.observe(seconds)

    def wake(self, outcome: str, seconds: float | None = None) -> None:
        self._wakes.labels(outcome).inc()
        if seconds is not None:
            self._wake_seconds.observe(seconds)

    def publishers_online(self, sessions: int) -> None:
        self._online.set(sessions)

    def queue(self, model: str, depth: int, oldest_seconds: float) -> None:
        self._depth.labels(model).set(depth)
        self._oldest.labels(model).set(oldest_seconds)

    def dynamodb_throttle(self, operation: str) -> None:
        self._throttles.labels(operation).inc()

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest  # noqa: PLC0415

        return generate_latest(self.registry)


class EmfMetrics(Metrics):
    """CloudWatch embedded metric format through Powertools (one blob per flush)."""

    def __init__(self, service: str = "relay") -> None:
        from aws_lambda_powertools.metrics import EphemeralMetrics  # noqa: PLC0415 - Lambda only

        self._metrics = EphemeralMetrics(namespace=NAMESPACE, service=service)

    def _add(self, name: str, unit: str, value: float, **dimensions: str) -> None:
        from aws_lambda_powertools.metrics import MetricUnit  # noqa: PLC0415

        if dimensions:
            # A dimension set per metric: emitted on its own, at once.
            from aws_lambda_powertools.metrics import single_metric  # noqa: PLC0415

            with single_metric(
                name=name, unit=MetricUnit(unit), value=value, namespace=NAMESPACE
            ) as metric:
                for key, dim in dimensions.items():
                    metric.add_dimension(name=key, value=dim)
            return
        self._metrics.add_metric(name=name, unit=MetricUnit(unit), value=value)

    def request(self, route: str, status: int, seconds: float) -> None:
        self._add("Requests", "Count", 1)
        self._add("RequestDuration", "Milliseconds", seconds * 1000)
        if status >= 500:
            self._add("ServerErrors", "Count", 1)

    def error(self, code: str) -> None:
        self._add("Errors", "Count", 1, code=code)

    def added_latency(self, seconds: float) -> None:
        self._add("AddedLatency", "Milliseconds", seconds * 1000)

    def first_token(self, seconds: float) -> None:
        self._add("TimeToFirstToken", "Milliseconds", seconds * 1000)

    def wake(self, outcome: str, seconds: float | None = None) -> None:
        self._add("Wakes", "Count", 1, outcome=outcome)
        if seconds is not None:
            self._add("WakeDuration", "Milliseconds", seconds * 1000)

    def publishers_online(self, sessions: int) -> None:
        self._add("PublishersOnline", "Count", sessions)

    def queue(self, model: str, depth: int, oldest_seconds: float) -> None:
        self._add("QueueDepth", "Count", depth, model=model)
        self._add("QueueOldestAge", "Seconds", oldest_seconds, model=model)

    def dynamodb_throttle(self, operation: str) -> None:
        self._add("DynamoDBThrottles", "Count", 1)

    def flush(self) -> None:
        self._metrics.flush_metrics(raise_on_empty_metrics=False)


def metrics_for(sink: str, service: str = "relay") -> Metrics:
    """The sink a setting names: `off`, `prometheus` or `emf`."""
    if sink == "prometheus":
        return PrometheusMetrics()
    if sink == "emf":
        return EmfMetrics(service)
    return Metrics()
