"""The Sweep model and its pure logic: matrix expansion, point rows and the best point."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kinfer.api import crdgen
from kinfer.api.manifests import ManifestError, parse_resource
from kinfer.api.resources import EXPERIMENT_NAME, SERVICE_NAME, SWEEP, SWEEP_NAME, Sweep
from kinfer.api.sweep import (
    MAX_POINTS,
    SweepError,
    SweepSpec,
    SweepStatus,
    best,
    failed_row,
    point_name,
    point_row,
    points,
)


def spec(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "service": {"model": {"name": "m", "format": "null"}, "workers": 1},
        "experiment": {"target": {"path": "/gpu"}, "schedule": [{"concurrency": 1, "duration": "2s"}]},
        "matrix": [
            {"path": "service.workers", "values": [1, 2]},
            {"path": "experiment.schedule[0].concurrency", "values": [1, 4, 8]},
        ],
    }
    doc.update(overrides)
    return doc


def sweep_doc(name: str = "study", **overrides: Any) -> dict[str, Any]:
    return {"apiVersion": "kinfer.dev/v1alpha1", "kind": "Sweep", "metadata": {"name": name}, "spec": spec(**overrides)}


def test_points_are_the_cross_product_first_path_slowest() -> None:
    expanded = points("study", SweepSpec.model_validate(spec()))
    assert [p.name for p in expanded] == [f"study-p{i}" for i in range(6)]
    assert [(p.service.workers, p.experiment.schedule[0].concurrency) for p in expanded] == list(
        itertools.product([1, 2], [1, 4, 8])
    )
    assert expanded[4].parameters == {"service.workers": 2, "experiment.schedule[0].concurrency": 4}
    assert all(p.experiment.target.service == p.name and p.experiment.target.url is None for p in expanded)


@given(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=3))
def test_point_count_and_order_for_any_matrix_shape(sizes: list[int]) -> None:
    paths = ["service.workers", "service.threads", "service.replicas"]
    matrix = [{"path": paths[i], "values": list(range(1, n + 1))} for i, n in enumerate(sizes)]
    expanded = points("s", SweepSpec.model_validate(spec(matrix=matrix)))
    assert len(expanded) == math.prod(sizes)
    seen = [tuple(p.parameters[m["path"]] for m in matrix) for p in expanded]
    assert seen == sorted(seen) and len(set(seen)) == len(seen)  # lexicographic: first path slowest


def test_paths_create_missing_objects_and_values_are_validated_by_the_models() -> None:
    matrix = [
        {"path": "service.resources.limits.cpu", "values": ["500m", 1]},
        {"path": "service.batching.maxBatchSize", "values": [4]},
    ]
    expanded = points("s", SweepSpec.model_validate(spec(matrix=matrix)))
    assert [p.service.resources.limits.cpu for p in expanded if p.service.resources and p.service.resources.limits] == [
        "500m",
        1,
    ]
    assert all(p.service.batching_or_default.max_batch_size == 4 for p in expanded)


def test_the_templates_are_not_changed_by_expansion() -> None:
    model = SweepSpec.model_validate(spec(matrix=[{"path": "service.batching.maxBatchSize", "values": [2, 8]}]))
    before = model.wire()
    points("s", model)
    assert model.wire() == before and model.service.batching is None


@pytest.mark.parametrize(
    ("matrix", "needle"),
    [
        ([{"path": "service.wrkers", "values": [1]}], "service.wrkers: Extra inputs are not permitted"),
        ([{"path": "service.workers", "values": [0]}], "point 0 (service.workers=0): service.workers"),
        ([{"path": "experiment.schedule[3].concurrency", "values": [1]}], "index 3 out of range"),
        ([{"path": "service.volumes[0].name", "values": ["a"]}], "service.volumes is not set in the template"),
        ([{"path": "service.workers[0]", "values": [1]}], "is not a list"),
        ([{"path": "experiment.target.batchSize", "values": [1, 4]}], "point 1 (experiment.target.batchSize=4)"),
    ],
)
def test_bad_paths_and_values_are_named(matrix: list[dict[str, Any]], needle: str) -> None:
    with pytest.raises(SweepError) as caught:
        points("s", SweepSpec.model_validate(spec(matrix=matrix)))
    assert needle in str(caught.value)


def test_a_url_target_is_kept_and_a_service_target_is_refused() -> None:
    url = spec(experiment={"target": {"url": "http://h:1"}, "schedule": [{"rps": 1, "duration": "1s"}]},
               matrix=[{"path": "experiment.schedule[0].rps", "values": [1, 2]}])
    assert all(p.experiment.target.url == "http://h:1" and p.experiment.target.service is None
               for p in points("s", SweepSpec.model_validate(url)))  # fmt: skip
    with pytest.raises(ManifestError, match=r"target\.service is set by the Sweep"):
        parse_resource(sweep_doc(experiment={"target": {"service": "x"}, "schedule": [{"rps": 1, "duration": "1s"}]}))


def test_spec_rules() -> None:
    with pytest.raises(ManifestError, match="given twice"):
        parse_resource(sweep_doc(matrix=[{"path": "service.workers", "values": [1]}] * 2))
    with pytest.raises(ManifestError, match="at most 1000"):
        parse_resource(sweep_doc(matrix=[{"path": "service.workers", "values": list(range(1, 101))},
                                         {"path": "service.threads", "values": list(range(1, 12))}]))  # fmt: skip
    with pytest.raises(ManifestError, match=r"objective capacity needs experiment\.mode capacity"):
        parse_resource(sweep_doc(objective="capacity"))
    with pytest.raises(ManifestError, match="every point must end"):
        parse_resource(sweep_doc(experiment={"target": {}, "loop": True, "schedule": [{"rps": 1, "duration": "1s"}]},
                                 matrix=[{"path": "experiment.schedule[0].rps", "values": [1]}]))  # fmt: skip
    with pytest.raises(ManifestError, match="matrix"):
        parse_resource(sweep_doc(matrix=[]))
    with pytest.raises(ManifestError, match="path"):
        parse_resource(sweep_doc(matrix=[{"path": "other.workers", "values": [1]}]))


def test_objective_defaults_from_the_experiment_mode() -> None:
    assert SweepSpec.model_validate(spec()).objective_or_default == "throughput"
    capacity = spec(experiment={"target": {}, "mode": "capacity", "slo": {"p99Ms": 50}})
    assert SweepSpec.model_validate(capacity).objective_or_default == "capacity"
    assert SweepSpec.model_validate(spec(objective="p99")).objective_or_default == "p99"


def test_the_name_rule_leaves_room_for_every_point_name() -> None:
    longest = "a" * SWEEP_NAME.max_length
    assert isinstance(parse_resource(sweep_doc(longest)), Sweep)
    last = point_name(longest, MAX_POINTS - 1)
    assert SERVICE_NAME.problem(last) is None and EXPERIMENT_NAME.problem(last) is None
    with pytest.raises(ManifestError, match="at most 50 characters"):
        parse_resource(sweep_doc("a" * (SWEEP_NAME.max_length + 1)))
    with pytest.raises(ManifestError, match="starting with a letter"):
        parse_resource(sweep_doc("1study"))


FINISHED: dict[str, Any] = {
    "phase": "Succeeded",
    "startedAt": "2026-01-01T00:00:00Z",
    "sent": 200,
    "completed": 190,
    "latencyMs": {"p50": 3.2, "p99": 12.5},
    "stages": [{"index": 0, "durationS": 10.0}, {"index": 1, "durationS": 10.0}],
    "conditions": [{"type": "SLOMet", "status": "True"}],
    "live": {"t": 20, "serverCPU": 0.8, "serverMemoryMB": 300.0},
}


def test_point_row_from_status_alone() -> None:
    row = point_row(1, {"service.workers": 2}, "s-p1", FINISHED)
    assert row == {
        "index": 1,
        "parameters": {"service.workers": 2},
        "experiment": "s-p1",
        "phase": "Succeeded",
        "startedAt": "2026-01-01T00:00:00Z",
        "achievedRPS": 10.0,
        "throughput": 9.5,
        "latencyMs": {"p50": 3.2, "p99": 12.5},
        "sloMet": True,
        "server": {"cpu": 0.8, "memoryMB": 300.0},
    }


def test_point_row_prefers_the_summary_and_reads_it_defensively() -> None:
    summary = {"achievedRPS": 11.0, "throughput": {"requestsPerS": 9.0}, "server": {"cpu": 1.5, "gpuUtil": 40},
               "capacity": {"rps": 55.5}, "slo": {"met": False}}  # fmt: skip
    status = {**FINISHED, "conditions": [], "capacity": None, "live": "garbage"}
    row = point_row(0, {}, "s-p0", status, summary)
    assert (row["achievedRPS"], row["throughput"], row["capacity"], row["sloMet"]) == (11.0, 9.0, 55.5, False)
    assert row["server"] == {"cpu": 1.5, "gpuUtil": 40.0}
    assert point_row(0, {}, "x", {}) == {"index": 0, "parameters": {}, "experiment": "x", "phase": "Failed",
                                         "message": "the experiment ended in phase None"}  # fmt: skip


def test_a_failed_experiment_row_quotes_its_condition() -> None:
    status = {"phase": "Failed", "conditions": [{"type": "Failed", "status": "True", "message": "target gone"}]}
    assert point_row(0, {}, "x", status)["message"] == "target gone"


def rows() -> list[dict[str, Any]]:
    return [
        {"index": 0, "parameters": {"a": 1}, "phase": "Succeeded", "throughput": 50.0, "sloMet": True,
         "latencyMs": {"p99": 20.0}, "capacity": 40.0},
        {"index": 1, "parameters": {"a": 2}, "phase": "Succeeded", "throughput": 90.0, "sloMet": False,
         "latencyMs": {"p99": 9.0}, "capacity": 60.0},
        {"index": 2, "parameters": {"a": 3}, "phase": "Succeeded", "throughput": 70.0,
         "latencyMs": {"p99": 15.0}},
        failed_row(3, {"a": 4}, "s-p3", "never Ready") | {"throughput": 1000.0, "capacity": 1000.0},
    ]  # fmt: skip


def test_best_per_objective() -> None:
    assert best(rows(), "throughput") == {"index": 2, "parameters": {"a": 3}, "value": 70.0}  # SLO missed at 1
    assert best(rows(), "p99") == {"index": 1, "parameters": {"a": 2}, "value": 9.0}
    assert best(rows(), "capacity") == {"index": 1, "parameters": {"a": 2}, "value": 60.0}
    assert best(rows()[3:], "throughput") is None and best([], "p99") is None


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=20))
def test_best_is_the_extreme_and_the_earliest_on_ties(values: list[float]) -> None:
    table = [{"index": i, "phase": "Succeeded", "throughput": v, "latencyMs": {"p99": v}} for i, v in enumerate(values)]
    top, low = best(table, "throughput"), best(table, "p99")
    assert top is not None and low is not None
    assert top["value"] == max(values) and top["index"] == values.index(max(values))
    assert low["value"] == min(values) and low["index"] == values.index(min(values))


def test_the_crd_refuses_any_spec_change() -> None:
    spec = crdgen.crd(SWEEP)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    [rule] = spec["x-kubernetes-validations"]
    assert rule["rule"] == "self == oldSelf" and "cannot change" in rule["message"]


def test_point_row_carries_the_mean_latency_and_gpu_memory_the_seed_tables_show() -> None:
    summary = {"latencyMs": {"p50": 3.0, "p99": 9.0, "mean": 3.456}, "server": {"cpu": 0.5, "gpuUtil": 61.0,
                                                                                 "gpuMemoryMB": 2048.0}}
    row = point_row(0, {}, "s-p0", {"phase": "Succeeded"}, summary)
    assert row["latencyMs"] == {"p50": 3.0, "p99": 9.0, "mean": 3.456}
    assert row["server"] == {"cpu": 0.5, "gpuUtil": 61.0, "gpuMemoryMB": 2048.0}
    assert SweepStatus.model_validate({"points": [row]}).wire()["points"][0]["latencyMs"]["mean"] == 3.456
