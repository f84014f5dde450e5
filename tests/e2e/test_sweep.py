"""Sweep end to end on the emulated API server: points run one at a time (the real ``kinfer serve`` with
the null backend and the real ``kinfer loadgen``, short schedules), each point's InferenceService is gone
before the next point starts, a failed point is recorded and the sweep goes on, and an operator restart
mid-sweep resumes without running a point twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from kinfer.controller.settings import Settings
from tests.e2e.operator_harness import Kubelet, condition, dump, install_crds, kinfer_operator, status_of
from tests.kube.cluster import Cluster, eventually
from tests.kube.kubectl import columns

SETTINGS = Settings(metrics_port=0, results_linger_s=20, sweep_ready_timeout_s=4, sweep_teardown_timeout_s=30)


def sweep(name: str, matrix: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kinfer.dev/v1alpha1", "kind": "Sweep", "metadata": {"name": name},
        "spec": {
            "service": {"model": {"name": "null", "format": "null"}, "service": {"type": "ClusterIP"}},
            "experiment": {"arrival": "uniform", "windowSize": 2, "schedule": [{"rps": 5, "duration": "2s"}],
                           "slo": {"p99Ms": 2000}},
            "matrix": matrix, **spec,
        },
    }  # fmt: skip


@contextlib.asynccontextmanager
async def watch_points(cluster: Any, prefix: str, namespace: str = "default",
                       interval_s: float = 0.1) -> AsyncIterator[list[set[str]]]:
    """Sample, every ``interval_s``, which points have an InferenceService or a server pod: what
    overlapped. ``cluster`` is the emulated one or the real control plane's (the same interface)."""
    seen: list[set[str]] = []

    async def sample() -> None:
        while True:
            names = {o["metadata"]["name"] for o in cluster.list("inferenceservices", namespace)}
            names |= {(o["metadata"].get("labels") or {}).get("kinfer.dev/service", "")
                      for o in cluster.list("pods", namespace)}  # fmt: skip
            seen.append({n for n in names if n and n.startswith(prefix)})
            await asyncio.sleep(interval_s)

    task = asyncio.create_task(sample())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until_phase(cluster: Cluster, name: str, phase: str, timeout_s: float) -> dict[str, Any]:
    """The Sweep's status once it reaches ``phase`` (the assertion shows the status and its points' if not)."""
    try:
        await eventually(lambda: status_of(cluster, "sweep", name).get("phase") == phase, timeout_s=timeout_s)
    except AssertionError:
        lexps = {o["metadata"]["name"]: o.get("status") for o in cluster.list("loadexperiments", "default")}
        isvcs = {o["metadata"]["name"]: o.get("status") for o in cluster.list("inferenceservices", "default")}
        raise AssertionError(f"sweep {name} not {phase}: {dump(status_of(cluster, 'sweep', name))}\n"
                             f"experiments: {dump(lexps)}\nservices: {dump(isvcs)}") from None
    return status_of(cluster, "sweep", name)


async def apply(cluster: Cluster, doc: dict[str, Any]) -> None:
    await cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(doc))


async def test_a_2x2_sweep_runs_its_points_one_at_a_time(cluster: Cluster, tmp_path: Path) -> None:
    await install_crds(cluster)
    doc = sweep("grid", [{"path": "service.workers", "values": [1, 2]},
                         {"path": "experiment.schedule[0].rps", "values": [5, 10]}])  # fmt: skip
    async with Kubelet(cluster, tmp_path), kinfer_operator(SETTINGS), watch_points(cluster, "grid-p") as seen:
        await apply(cluster, doc)
        await until_phase(cluster, "grid", "Running", 10)
        await until_phase(cluster, "grid", "Succeeded", 150)
    status = status_of(cluster, "sweep", "grid")
    assert (status["total"], status["done"], status["objective"]) == (4, 4, "throughput"), dump(status)
    rows = status["points"]
    assert [r["parameters"] for r in rows] == [
        {"service.workers": w, "experiment.schedule[0].rps": r} for w in (1, 2) for r in (5, 10)
    ]
    assert [r["experiment"] for r in rows] == [f"grid-p{i}" for i in range(4)]
    assert all(r["phase"] == "Succeeded" and r["throughput"] > 0 and r["sloMet"] is True for r in rows), dump(rows)
    assert all(r["latencyMs"]["p99"] > 0 and r["achievedRPS"] > 0 for r in rows), dump(rows)
    # the model server's resources, from the generator's summary (it scrapes the point's pods)
    assert all(r.get("server", {}).get("memoryMB", 0) > 0 for r in rows), dump(rows)
    # offered 5 or 10 requests/s: the rows say which
    assert rows[1]["achievedRPS"] > rows[0]["achievedRPS"] * 1.5, dump(rows)
    best = max(range(4), key=lambda i: rows[i]["throughput"])
    assert status["best"] == {"index": best, "parameters": rows[best]["parameters"],
                              "value": rows[best]["throughput"]}  # fmt: skip
    assert condition(status, "Complete")["status"] == "True" and condition(status, "Progressing")["status"] == "False"
    assert "current" not in status
    # One point at a time, and its InferenceService (with its pods) gone before the next one starts.
    assert all(len(s) <= 1 for s in seen), [s for s in seen if len(s) > 1]
    order = [next(iter(s)) for s in seen if s]
    assert [n for i, n in enumerate(order) if i == 0 or order[i - 1] != n] == [f"grid-p{i}" for i in range(4)]
    assert cluster.list("inferenceservices", "default") == []
    experiments = {o["metadata"]["name"] for o in cluster.list("loadexperiments", "default")}
    assert experiments == {f"grid-p{i}" for i in range(4)}
    lexp = cluster.get("loadexperiments", "grid-p2")
    assert lexp is not None and lexp["spec"]["target"] == {**lexp["spec"]["target"], "service": "grid-p2"}
    [owner] = lexp["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Sweep", "grid", True)
    _, out, _ = await cluster.kubectl("get", "sweep", "grid")
    [row] = columns(out)
    assert (row["PHASE"], row["DONE"], row["TOTAL"]) == ("Succeeded", "4", "4"), out
    assert float(row["BEST"]) == rows[best]["throughput"], out


async def test_a_failed_point_is_recorded_and_the_sweep_goes_on(cluster: Cluster, tmp_path: Path) -> None:
    await install_crds(cluster)
    # A host path outside the operator's allow-list: that point's InferenceService is refused (never Ready),
    # so its experiment waits until the bound.
    refused = [{"name": "data", "hostPath": "/not-allowed", "mountPath": "/data"}]
    doc = sweep("mixed", [{"path": "service.volumes", "values": [refused, []]}], objective="p99")
    async with Kubelet(cluster, tmp_path), kinfer_operator(SETTINGS):
        await apply(cluster, doc)
        status = await until_phase(cluster, "mixed", "Succeeded", 90)
        stopped = status_of(cluster, "lexp", "mixed-p0")
        # Deleting the Sweep deletes its points' objects (owner references).
        await cluster.kubectl("delete", "sweep", "mixed", "--timeout=20s", timeout_s=30)
        await eventually(lambda: not cluster.list("loadexperiments", "default")
                         and not cluster.list("inferenceservices", "default"), timeout_s=20)  # fmt: skip
    failed, ok = status["points"]
    assert failed["phase"] == "Failed" and "mixed-p0 not Ready within 4s" in failed["message"], dump(status)
    assert ok["phase"] == "Succeeded" and ok["latencyMs"]["p99"] > 0, dump(status)
    assert status["best"]["index"] == 1 and status["best"]["value"] == ok["latencyMs"]["p99"]
    assert stopped["phase"] == "Stopped", dump(stopped)  # the waiting experiment was ended, not left behind
    assert "1 failed" in condition(status, "Complete")["message"]


async def test_every_point_failing_fails_the_sweep(cluster: Cluster, tmp_path: Path) -> None:
    await install_crds(cluster)
    refused = [{"name": "data", "hostPath": "/not-allowed", "mountPath": "/data"}]
    doc = sweep("hopeless", [{"path": "service.volumes", "values": [refused]}])
    async with Kubelet(cluster, tmp_path), kinfer_operator(SETTINGS):
        await apply(cluster, doc)
        await until_phase(cluster, "hopeless", "Failed", 60)
    status = status_of(cluster, "sweep", "hopeless")
    assert condition(status, "Complete")["status"] == "True" and "best" not in status, dump(status)


async def test_a_bad_matrix_fails_the_sweep_naming_the_path(cluster: Cluster, tmp_path: Path) -> None:
    await install_crds(cluster)
    doc = sweep("badpath", [{"path": "experiment.schedule[4].rps", "values": [1]}])
    async with kinfer_operator(SETTINGS):
        await apply(cluster, doc)
        await until_phase(cluster, "badpath", "Failed", 20)
    failed = condition(status_of(cluster, "sweep", "badpath"), "Failed")
    assert failed["reason"] == "InvalidSpec" and "index 4 out of range" in failed["message"], dump(failed)
    assert cluster.list("inferenceservices", "default") == []


async def test_an_operator_restart_resumes_without_running_a_point_twice(cluster: Cluster, tmp_path: Path) -> None:
    await install_crds(cluster)
    doc = sweep("resume", [{"path": "experiment.schedule[0].rps", "values": [5, 8, 10]}])
    async with Kubelet(cluster, tmp_path):
        async with kinfer_operator(SETTINGS):
            await apply(cluster, doc)
            await eventually(lambda: (status_of(cluster, "sweep", "resume").get("current") or {}).get("index") == 1
                             and status_of(cluster, "lexp", "resume-p1").get("phase") == "Running", timeout_s=60)
        # the operator is gone mid-point: the point's objects stay, the status says where it was
        first = cluster.get("loadexperiments", "resume-p0")
        running = cluster.get("loadexperiments", "resume-p1")
        assert first is not None and running is not None
        assert status_of(cluster, "sweep", "resume")["done"] == 1
        async with kinfer_operator(SETTINGS):
            await until_phase(cluster, "resume", "Succeeded", 90)
    status = status_of(cluster, "sweep", "resume")
    assert [r["index"] for r in status["points"]] == [0, 1, 2] and status["done"] == 3, dump(status)
    assert all(r["phase"] == "Succeeded" for r in status["points"]), dump(status)
    # adopted, not re-created: the same objects (uids) as before the restart
    for before in (first, running):
        after = cluster.get("loadexperiments", before["metadata"]["name"])
        assert after is not None and after["metadata"]["uid"] == before["metadata"]["uid"]
    assert cluster.list("inferenceservices", "default") == []
