"""The chart's Grafana dashboard (charts/kinfer/dashboards/kinfer.json) is valid, shows what issue #18
asks for, and every metric its queries name is one kinfer exports (operator, model server, generator)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

from hdrh.histogram import HdrHistogram
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from kinfer.controller.metrics import OperatorMetrics
from kinfer.loadgen.metrics import RunCollector
from kinfer.server.metrics import ServerMetrics

DASHBOARD = Path(__file__).resolve().parents[3] / "charts" / "kinfer" / "dashboards" / "kinfer.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "summary": ("", "_sum", "_count")}


def exported(*collectors: CollectorRegistry | Collector) -> set[str]:
    """Every sample name the collectors can expose (families may have no samples yet: labelled, unset)."""
    names: set[str] = set()
    for collector in collectors:
        for family in collector.collect():
            names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def generator_collector() -> RunCollector:
    total = SimpleNamespace(sent=1, completed=1, errors={"timeout": 1}, dropped=0,
                            latency=HdrHistogram(1, 60_000_000, 3), latency_sum=0.1)
    run = SimpleNamespace(recorder=SimpleNamespace(total=total), plan=SimpleNamespace(target=lambda t: 1.0),
                          elapsed=lambda: 1.0, phase=SimpleNamespace(value="Running"))
    return RunCollector(run)  # type: ignore[arg-type]


def queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def test_the_dashboard_is_valid_grafana_json_with_unique_panels() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "kinfer" and board["schemaVersion"] >= 36
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and all(p["targets"] and p["gridPos"] for p in board["panels"])
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "namespace"}


def test_every_metric_the_dashboard_queries_is_exported_by_kinfer() -> None:
    names = exported(OperatorMetrics().registry, ServerMetrics("m", registry=CollectorRegistry()).registry,
                     generator_collector())
    used = {m for q in queries() for m in re.findall(r"\bkinfer_[a-z0-9_]+", q)}
    assert used and used <= names, f"queried but not exported: {sorted(used - names)}"


def test_the_dashboard_shows_live_experiments_server_stages_and_resources() -> None:
    text = " ".join(queries())
    for metric in ("kinfer_experiment_sent_rps", "kinfer_experiment_completed_qps", "kinfer_experiment_p99_ms",
                   "kinfer_experiment_service_rate", "kinfer_server_stage_duration_seconds_bucket",
                   "kinfer_server_worker_cpu_seconds", "kinfer_server_gpu_utilization_ratio"):
        assert metric in text, metric
