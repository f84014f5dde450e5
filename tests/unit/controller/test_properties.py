"""Properties of the operator's pure decisions under generated cluster states (hypothesis): the pod plan
never deletes a pod twice, one being deleted, or more ready pods than the availability budget allows;
the phase machine never leaves a terminal phase; the merged status never reports more completions than
sends."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kinfer.api import InferenceService
from kinfer.controller import isvc_build as build
from kinfer.controller import lexp_status
from kinfer.controller.meta import TEMPLATE_HASH
from kinfer.controller.phases import Observation, Phase, next_phase

NAME = "svc"


def service(replicas: int) -> InferenceService:
    return InferenceService.model_validate({
        "apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService",
        "metadata": {"name": NAME, "namespace": "default", "uid": "u"},
        "spec": {"model": {"name": "null", "format": "null"}, "replicas": replicas}})


@st.composite
def pod_states(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Pods with indexes 0..7 (some beyond the wanted count), each old or new, ready or not, deleting or not."""
    pods = []
    for index in draw(st.sets(st.integers(0, 7), max_size=8)):
        meta: dict[str, Any] = {"name": build.pod_name(NAME, index),
                                "annotations": {TEMPLATE_HASH: draw(st.sampled_from(["old", "new"]))}}
        if draw(st.booleans()):
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        ready = draw(st.booleans())
        pods.append({"metadata": meta, "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}})
    return pods


@settings(max_examples=400, deadline=None)
@given(replicas=st.integers(1, 6), pods=pod_states())
def test_the_pod_plan_is_safe_in_every_cluster_state(replicas: int, pods: list[dict[str, Any]]) -> None:
    plan = build.plan_pods(service(replicas), pods, "new")
    by_name = {p["metadata"]["name"]: p for p in pods}
    assert len(set(plan.delete)) == len(plan.delete), "a pod deleted twice"
    for name in plan.delete:
        assert name in by_name, f"deletes {name}, which does not exist"
        assert not by_name[name]["metadata"].get("deletionTimestamp"), f"deletes {name} again"
    existing = {build.pod_index(NAME, n) for n in by_name}
    assert not set(plan.create) & existing, "creates a pod whose name is taken"
    assert set(plan.create) == set(range(replicas)) - existing
    wanted = [p for n, p in by_name.items() if (build.pod_index(NAME, n) or 0) < replicas]
    ready_deleted = [n for n in plan.delete if build.is_ready(by_name[n])
                     and (build.pod_index(NAME, n) or 0) < replicas]
    # The availability budget: at most one ready wanted pod goes at a time, and only while every other
    # wanted pod is ready (a single replica may always be replaced).
    assert len(ready_deleted) <= 1
    if ready_deleted and replicas > 1:
        others = [p for p in wanted if p["metadata"]["name"] != ready_deleted[0]]
        assert len(others) == replicas - 1 and all(build.is_ready(p) for p in others)


observations = st.builds(
    Observation,
    job_exists=st.booleans(),
    target_ready=st.booleans(),
    stop_requested=st.booleans(),
    generator_phase=st.sampled_from([None, "Pending", "Running", "Succeeded", "Failed", "Stopped"]),
    job_finished=st.sampled_from([None, "Complete", "Failed"]),
)


@settings(max_examples=400, deadline=None)
@given(phase=st.sampled_from(list(Phase)), seen=observations)
def test_the_phase_machine_never_leaves_a_terminal_phase(phase: Phase, seen: Observation) -> None:
    after = next_phase(phase, seen)
    if phase.terminal:
        assert after is phase
    assert isinstance(after, Phase)


counts = st.integers(0, 10_000)


@st.composite
def snapshots(draw: st.DrawFn) -> dict[str, Any]:
    sent = draw(counts)
    completed = draw(st.integers(0, sent))
    stage_sent = draw(st.integers(0, sent))
    return {"phase": draw(st.sampled_from(["Pending", "Running", "Succeeded", "Failed", "Stopped"])),
            "sent": sent, "completed": completed, "errors": sent - completed, "dropped": draw(counts),
            "stages": [{"index": 0, "sent": stage_sent, "completed": draw(st.integers(0, stage_sent))}]}


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(snapshots(), min_size=1, max_size=6))
def test_the_merged_status_never_reports_more_completions_than_sends(parts: list[dict[str, Any]]) -> None:
    merged = lexp_status.merge(parts)
    assert merged["completed"] <= merged["sent"] == sum(p["sent"] for p in parts)
    for stage in merged["stages"]:
        assert stage["completed"] <= stage["sent"]
        assert stage.get("serviceRate") is None or 0 <= stage["serviceRate"] <= 1
    status = lexp_status.live_status(merged)
    assert status["completed"] <= status["sent"]
    if any(p["phase"] == "Failed" for p in parts):
        assert merged["phase"] == "Failed"


def test_the_operators_verdict_counts_failures_against_the_latency_objective() -> None:
    from kinfer.api.loadexperiment import SLO

    ok = {"sent": 1000, "completed": 1000, "dropped": 0, "latencyMs": {"p50": 2, "p99": 5, "p999": 50, "max": 80}}
    assert lexp_status.verdict(SLO(p99_ms=10), ok).met
    # 0.5 % failed: the p99 of all offered requests is the successes' 99.5th percentile (<= p999 = 50 ms).
    some = {**ok, "completed": 995}
    verdict = lexp_status.verdict(SLO(p99_ms=10), some)
    assert not verdict.met and "p99 50.0 ms > 10 ms" in verdict.message
    # 99 % failed: never met, whatever the few successes' p99 was.
    most = {**ok, "completed": 10}
    assert not lexp_status.verdict(SLO(p99_ms=100), most).met
    summary = lexp_status.summary(most, SLO(p99_ms=100), "http://x")
    assert summary["slo"]["successRate"] == 0.01
    assert "success rate 1.00% (10 of 1000 offered)" in summary["slo"]["message"]
