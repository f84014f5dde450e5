"""Prometheus exposition of a run (``GET /metrics``), read on scrape from the run's merged state.

A custom collector over the recorder rather than per-request counter increments: the hot path stays
free of metric updates, and the latency histogram comes from the exact HdrHistogram.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from hdrh.histogram import HdrHistogram
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from kinfer.loadgen.runner import Run

#: Latency histogram bucket bounds, seconds.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RunCollector(Collector):
    """Counters, latency histogram and target-rate gauge of one run."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def collect(self) -> Iterator[Metric]:
        total = self.run.recorder.total
        yield CounterMetricFamily(
            "kinfer_loadgen_requests_sent", "Requests sent.", value=total.sent
        )
        yield CounterMetricFamily(
            "kinfer_loadgen_responses_completed", "Successful responses.", value=total.completed
        )
        errors = CounterMetricFamily(
            "kinfer_loadgen_errors", "Failed requests by class.", labels=["class"]
        )
        for cls, n in sorted(total.errors.items()):
            errors.add_metric([cls], n)
        yield errors
        yield CounterMetricFamily(
            "kinfer_loadgen_dropped", "Requests not sent: max-in-flight reached.", value=total.dropped
        )
        yield GaugeMetricFamily(
            "kinfer_loadgen_target_rps",
            "Current target rate, requests/s.",
            value=self.run.plan.target(self.run.elapsed()) if self.run.phase.value == "Running" else 0.0,
        )
        yield HistogramMetricFamily(
            "kinfer_loadgen_latency_seconds",
            "Latency from the scheduled send time to the response, successful requests.",
            buckets=cumulative_buckets(total.latency),
            sum_value=total.latency_sum,
        )


def cumulative_buckets(hist: HdrHistogram) -> list[tuple[str, float]]:
    """Prometheus ``le`` buckets from an HdrHistogram (to its precision: 3 significant figures)."""
    counts = list(hist.counts)
    out = []
    for bound in LATENCY_BUCKETS_S:
        index = min(hist.get_counts_array_index(int(bound * 1e6)), len(counts) - 1)
        out.append((str(bound), float(sum(counts[: index + 1]))))
    out.append(("+Inf", float(hist.get_total_count())))
    return out


def registry_for(run: Run) -> CollectorRegistry:
    """A registry of its own per run (several runs may live in one process, e.g. in tests)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RunCollector(run))
    return registry
