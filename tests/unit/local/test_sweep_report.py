"""A local Sweep's comparison: rows read defensively ('-' where not measured), sweep.json in the shape of
the Sweep's status, and a point's row built from a local run's outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kinfer.api import SweepStatus, parse_resource
from kinfer.api.slo import Verdict
from kinfer.api.sweep import best
from kinfer.local.plan import ExperimentPlan
from kinfer.local.runner import ExperimentOutcome, RunOutcome
from kinfer.local.sweep import expand, local_status, row_for
from kinfer.local.sweep_report import SweepResult, status_document, table_rows, timing_rows, write_plots

ROWS: list[dict[str, Any]] = [
    {"index": 0, "parameters": {"service.replicas": 1, "service.resources.limits.cpu": "0.5"}, "experiment": "s-p0",
     "phase": "Succeeded", "achievedRPS": 10.0, "throughput": 9.5, "latencyMs": {"p50": 5.0, "p99": 20.0, "mean": 6.5},
     "sloMet": True, "server": {"cpu": 0.42, "memoryMB": 120.0}},
    {"index": 1, "parameters": {"service.replicas": 2, "service.resources.limits.cpu": "0.5"}, "experiment": "s-p1",
     "phase": "Failed", "message": "never ready"},
]  # fmt: skip


def _result(rows: list[dict[str, Any]] = ROWS, summaries: dict[int, dict[str, Any]] | None = None) -> SweepResult:
    return SweepResult("s", "throughput", "Succeeded", 2, rows, best(rows, "throughput"), summaries or {})


def test_the_table_has_parameters_then_measurements_and_dashes_where_nothing_was_measured() -> None:
    headers, rows = table_rows(_result())
    assert headers[:3] == ["point", "replicas", "limits.cpu"] and "mean ms" in headers and "CPU cores" in headers
    cells = dict(zip(headers, rows[0], strict=True))
    assert (cells["mean ms"], cells["p99 ms"], cells["CPU cores"], cells["GPU %"], cells["SLO"]) == (
        "6.5", "20.0", "0.42", "-", "met")  # fmt: skip
    failed = dict(zip(headers, rows[1], strict=True))
    assert failed["phase"] == "Failed" and {failed[h] for h in headers[4:]} == {"-"}


def test_sweep_json_is_the_sweep_status() -> None:
    doc = status_document(_result())
    status = SweepStatus.model_validate(doc)
    assert status.total == 2 and status.done == 2 and status.best is not None and status.best.index == 0
    assert status.points is not None and status.points[0].server is not None and status.points[0].server.cpu == 0.42


def test_per_stage_timing_appears_only_with_server_timing() -> None:
    assert timing_rows(_result()) is None
    timing = {"queue": {"mean": 1.0}, "infer": {"mean": 4.0}, "preprocess": {"mean": 0.5}}
    summaries = {0: {"serverTimingMs": timing, "serviceTimeMs": {"mean": 6.0}, "latencyMs": {"mean": 6.5}}}
    found = timing_rows(_result(summaries=summaries))
    assert found is not None
    headers, rows = found
    first = dict(zip(headers, rows[0], strict=True))
    assert [first[k] for k in ("queue", "infer", "postprocess", "server total")] == ["1.00", "4.00", "-", "5.50"]
    assert first["client (service time)"] == "6.00" and rows[1][1] == "-"


SWEEP = {
    "apiVersion": "kinfer.dev/v1alpha1", "kind": "Sweep", "metadata": {"name": "s"},
    "spec": {"service": {"model": {"name": "m", "format": "null"}},
             "experiment": {"schedule": [{"concurrency": 1, "duration": "1s"}], "slo": {"p99Ms": 100}},
             "matrix": [{"path": "service.replicas", "values": [1, 2]}]},
}  # fmt: skip


def test_a_local_run_becomes_the_points_row() -> None:
    sweep = parse_resource(SWEEP)
    (point, _svc, exp), _ = expand(sweep)  # type: ignore[arg-type]
    summary = {"sent": 100, "completed": 98, "durationS": 10.0, "latencyMs": {"p50": 4.0, "p99": 120.0, "mean": 5.0},
               "slo": {"met": False}, "server": {"cpu": 0.3, "gpuMemoryMB": 512.0},
               "serverLimits": {"cpu": 0.5, "mechanism": "affinity", "cores": [[0]]}}  # fmt: skip
    plan: Any = ExperimentPlan("s-p0", exp, "s-p0", "u", 1, Path("/r"), {}, (), ())
    outcome = RunOutcome([ExperimentOutcome(plan, 1, summary, Verdict(False, "SLOFailed", "p99 120 ms > 100 ms"))])
    status = local_status(outcome, exp)
    assert status["phase"] == "Succeeded" and status["conditions"][0]["status"] == "False"
    row = row_for(point, exp, outcome)
    assert row["phase"] == "Succeeded" and row["sloMet"] is False and row["throughput"] == 9.8
    assert row["latencyMs"] == {"p50": 4.0, "p99": 120.0, "mean": 5.0}
    assert row["server"] == {"cpu": 0.3, "gpuMemoryMB": 512.0} and row["cpuLimit"]["mechanism"] == "affinity"
    never_started = row_for(point, exp, RunOutcome(error="InferenceService s-p0 replica 0 exited with code 2"))
    assert never_started["phase"] == "Failed" and "exited with code 2" in never_started["message"]


def test_the_plots_that_apply_are_drawn(tmp_path: Path) -> None:
    rows = [{**ROWS[0], "capacity": 42.0}, {**ROWS[1], "index": 1}]
    open_loop = {"stages": [{"rps": 5, "latencyMs": {"p99": 10.0}}, {"rps": 10, "latencyMs": {"p99": 30.0}}],
                 "capacity": {"rps": 42.0, "probes": [{"rps": 40, "p99Ms": 90.0}]}}  # fmt: skip
    written = write_plots(tmp_path, _result(rows, {0: open_loop}))
    assert written == ["p99_vs_rate.png", "capacity_per_point.png", "latency_per_point.png"]
    assert all((tmp_path / name).stat().st_size > 1000 for name in written)
    closed = {0: {"stages": [{"concurrency": 4, "requestsPerS": 100.0}]}}
    assert write_plots(tmp_path, _result(ROWS, closed))[0] == "throughput_vs_concurrency.png"
