"""The Sweep's pure builders: each point's objects, owned by the Sweep, and the status after each point."""

from __future__ import annotations

from typing import Any

from kinfer.api.sweep import SweepSpec, points
from kinfer.controller import sweep_build as build
from kinfer.controller.meta import controlled_by
from kinfer.controller.settings import from_env

SPEC = SweepSpec.model_validate({
    "service": {"model": {"name": "m", "format": "null"}},
    "experiment": {"schedule": [{"rps": 5, "duration": "2s"}], "target": {"path": "/v2/health/ready"}},
    "matrix": [{"path": "service.workers", "values": [1, 3]}],
})  # fmt: skip


def test_each_point_s_objects_are_named_labelled_and_controlled_by_the_sweep() -> None:
    point = points("study", SPEC)[1]
    isvc = build.build_service("study", "ns", "uid-1", point)
    lexp = build.build_experiment("study", "ns", "uid-1", point)
    for obj in (isvc, lexp):
        assert obj["metadata"]["name"] == "study-p1" and obj["metadata"]["namespace"] == "ns"
        assert controlled_by(obj, "uid-1") and obj["metadata"]["ownerReferences"][0]["kind"] == "Sweep"
        assert obj["metadata"]["labels"][build.SWEEP_LABEL] == "study"
        assert obj["metadata"]["labels"][build.POINT_LABEL] == "1"
    assert isvc["kind"] == "InferenceService" and isvc["spec"]["workers"] == 3
    assert lexp["kind"] == "LoadExperiment"
    assert lexp["spec"]["target"]["service"] == "study-p1" and lexp["spec"]["target"]["path"] == "/v2/health/ready"


def row(index: int, phase: str, throughput: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index, "parameters": {"service.workers": index}, "phase": phase}
    if throughput is not None:
        out["throughput"] = throughput
    return out


def test_status_after_each_point_and_the_outcome() -> None:
    assert build.next_index(None) == 0 and build.next_index({"points": [row(0, "Failed")]}) == 1
    rows = [row(0, "Failed"), row(1, "Succeeded", 12.5)]
    status = build.after_point(rows, "throughput", 3)
    assert (status["done"], status["total"], status["current"]) == (2, 3, None)
    assert status["best"] == {"index": 1, "parameters": {"service.workers": 1}, "value": 12.5}
    assert build.outcome(rows) == "Succeeded" and build.outcome([row(0, "Failed")]) == "Failed"
    assert "2 of 3 point(s) run, 1 failed; best throughput 12.5 at point 1" in build.summary_text(rows, "throughput", 3)
    assert "no point qualified" in build.summary_text([row(0, "Failed")], "p99", 1)


def test_sweep_timeouts_are_settings() -> None:
    env = {"KINFER_OPERATOR_SWEEP_READY_TIMEOUT_S": "30", "KINFER_OPERATOR_SWEEP_TEARDOWN_TIMEOUT_S": "9"}
    settings = from_env(env)
    assert (settings.sweep_ready_timeout_s, settings.sweep_teardown_timeout_s) == (30.0, 9.0)
    assert not settings.extra
