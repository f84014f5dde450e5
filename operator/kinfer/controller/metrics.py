"""The operator's own ``/healthz`` and ``/metrics`` (Prometheus), served by a small aiohttp app.

Each operator run has its own registry, so in-process test runs never collide on metric names.
Per-experiment gauges carry ``namespace``/``name`` labels and are removed when the run ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest


class OperatorMetrics:
    """Gauges of running experiments and counters of what the operator did."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("namespace", "name")
        self.target_rps = Gauge(
            "kinfer_experiment_target_rps",
            "Offered rate of a running experiment (requests/s).",
            labels,
            registry=self.registry,
        )
        self.sent_rps = Gauge(
            "kinfer_experiment_sent_rps",
            "Requests sent in the last record interval (per s).",
            labels,
            registry=self.registry,
        )
        self.completed_qps = Gauge(
            "kinfer_experiment_completed_qps",
            "Responses completed in the last record interval (per s).",
            labels,
            registry=self.registry,
        )
        self.p99_ms = Gauge(
            "kinfer_experiment_p99_ms",
            "p99 latency of the last record interval (ms).",
            labels,
            registry=self.registry,
        )
        self.service_rate = Gauge(
            "kinfer_experiment_service_rate",
            "avgQPS/avgRPS over the window (0..1).",
            labels,
            registry=self.registry,
        )
        self.ready_replicas = Gauge(
            "kinfer_inferenceservice_ready_replicas",
            "Ready server pods of an InferenceService.",
            labels,
            registry=self.registry,
        )
        self.reconciles = Counter(
            "kinfer_operator_reconciles",
            "Reconciles by kind and outcome.",
            ("kind", "outcome"),
            registry=self.registry,
        )
        self.poll_errors = Counter(
            "kinfer_operator_generator_poll_errors",
            "Failed polls of a generator's control API.",
            registry=self.registry,
        )

    def experiment(
        self,
        namespace: str,
        name: str,
        target: float | None,
        sent: float | None,
        p99: float | None,
        service_rate: float | None,
        completed: float | None = None,
    ) -> None:
        """Record the latest numbers of one running experiment."""
        for gauge, value in (
            (self.target_rps, target),
            (self.sent_rps, sent),
            (self.completed_qps, completed),
            (self.p99_ms, p99),
            (self.service_rate, service_rate),
        ):
            if value is not None:
                gauge.labels(namespace, name).set(value)

    def forget_experiment(self, namespace: str, name: str) -> None:
        """Drop the gauges of an experiment that is no longer running."""
        for gauge in (self.target_rps, self.sent_rps, self.completed_qps, self.p99_ms, self.service_rate):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


#: What ``/healthz`` asks: a short state word and the problems (none: healthy).
HealthCheck = Callable[[], tuple[str, list[str]]]


async def serve(metrics: OperatorMetrics, host: str, port: int, health: HealthCheck) -> web.AppRunner:
    """Start ``/healthz`` (200, or 503 naming what is wrong) and ``/metrics``; the caller cleans up."""

    async def healthz(_: web.Request) -> web.Response:
        state, problems = health()
        if problems:
            return web.json_response({"status": state, "problems": problems}, status=503)
        return web.json_response({"status": state})

    async def metrics_view(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
