"""A LoadExperiment on the real control plane: the real Job controller makes the generator pods of an
indexed Job (``parallelism: 2``), the operator (as the chart's ServiceAccount) writes live status every
interval, ``kubectl patch`` of ``intensity`` reaches the generators within a second, the run completes
with ``SLOMet``, an operator killed with SIGKILL mid-run resumes without a second Job, and deleting the
experiment empties the namespace through the real garbage collector."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from kinfer.api import LoadExperiment, parse_resource
from kinfer.controller.lexp_build import build_job
from kinfer.controller.settings import Settings
from tests.cluster.live import KUBECTL, LiveCluster, OperatorProcess, running_operator
from tests.cluster.test_rbac import stop_before_start
from tests.e2e.operator_harness import Kubelet, condition, dump, status_of
from tests.kube.cluster import eventually
from tests.kube.kubectl import columns

SERVER = {"apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "target"},
          "spec": {"model": {"name": "null", "format": "null"}, "service": {"type": "ClusterIP"}}}
EXPERIMENT: dict[str, Any] = {
    "apiVersion": "kinfer.dev/v1alpha1", "kind": "LoadExperiment", "metadata": {"name": "split"},
    "spec": {"target": {"service": "target"}, "arrival": "uniform", "windowSize": 3, "parallelism": 2,
             "schedule": [{"rps": 10, "duration": "4s"}, {"rps": 20, "duration": "16s"}],
             "slo": {"p99Ms": 1000, "minSuccessRate": 0.99}},
}


async def generator_snapshots(kubelet: Kubelet, token: str | None = None) -> list[dict[str, Any]]:
    """``GET /api/status`` of every running generator process."""
    out = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        for gen in kubelet.running("split-loadgen"):
            async with session.get(f"http://{gen.ip}:8089/api/status") as response:
                out.append(await response.json())
    return out


async def plugin(live: LiveCluster, *args: str) -> tuple[int, str, str]:
    """``kubectl kinfer ARGS -n <namespace>`` through kubectl's plugin mechanism."""
    env = {**live.plane.env(), "PATH": f"{Path(sys.executable).parent}:{live.plane.env()['PATH']}", "COLUMNS": "160"}
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "kinfer", *args, "-n", live.namespace, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def live_t(live: LiveCluster) -> float:
    return float((status_of(live, "lexp", "split").get("live") or {}).get("t") or 0)


async def test_indexed_generator_job_live_status_intensity_kill_restart_and_collection(
    live: LiveCluster, kubelet: Kubelet, operator: OperatorProcess
) -> None:
    loop = asyncio.get_running_loop()
    async with running_operator(operator):
        await live.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([SERVER, EXPERIMENT]))
        async with live.kubectl_stream("get", "lexp", "split", "-w") as watch:
            await watch.wait_for_line(r"^split\s+Running\s+[\d.]+\s+\d+(\.\d+)?\s", timeout_s=60)

        job = live.get("jobs", "split-loadgen")
        assert job is not None and job["spec"]["completionMode"] == "Indexed", dump(job)
        pods = live.list("pods", label_selector=f"batch.kubernetes.io/controller-uid={job['metadata']['uid']}")
        indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods)
        assert indexes == ["0", "1"], dump(pods)  # made by the real Job controller
        assert len(kubelet.running("split-loadgen")) == 2
        secret = live.get("secrets", "split-control")
        assert secret is not None and secret["metadata"]["ownerReferences"][0]["kind"] == "LoadExperiment"
        policy = live.get("networkpolicies", "split-control")  # only the operator reaches the control port
        assert policy is not None and policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8089}]

        # Status every interval (1 s), from both generators merged.
        first = live_t(live)
        await eventually(lambda: live_t(live) >= first + 2, timeout_s=4)
        status = status_of(live, "lexp", "split")
        assert status["phase"] == "Running" and condition(status, "Progressing")["message"] == \
            "2 generator(s) running", dump(status)

        # The control API refuses a state change without the experiment's token.
        gen = kubelet.running("split-loadgen")[0]
        async with aiohttp.ClientSession() as session, \
                session.post(f"http://{gen.ip}:8089/api/intensity", json={"rps": 500}) as response:
            assert response.status == 401, await response.text()

        # kubectl patch → both generators have their share within a second.
        sent = loop.time()
        await live.kubectl("patch", "lexp", "split", "--type=merge", "-p", '{"spec":{"intensity":30}}')

        async def pushed() -> bool:
            return all(s.get("intensity") == 15 for s in await generator_snapshots(kubelet))

        await eventually(pushed, timeout_s=3, interval=0.02)
        push_s = loop.time() - sent
        assert push_s <= 1.0, f"intensity reached the generators {push_s:.2f}s after kubectl patch returned"
        await eventually(lambda: status_of(live, "lexp", "split").get("targetRPS") == 30, timeout_s=3)

        async def rate_is_30() -> bool:
            snaps = await generator_snapshots(kubelet)
            return abs(sum(s.get("realRPS") or 0 for s in snaps) - 30) <= 3

        await eventually(rate_is_30, timeout_s=3, interval=0.1)  # the first full record at the new rate
        await live.kubectl("patch", "lexp", "split", "--type=json", "-p", '[{"op":"remove","path":"/spec/intensity"}]')

        # SIGKILL in the middle of the run: the status stops, then resumes after a restart.
        await operator.kill(signal.SIGKILL)
        stale = live_t(live)
        await asyncio.sleep(1.5)
        assert live_t(live) == stale
    job_uid = job["metadata"]["uid"]
    async with running_operator(operator):
        await eventually(lambda: live_t(live) > stale + 1, timeout_s=20)  # the old lease runs out first
        jobs = live.list("jobs")
        assert [(j["metadata"]["name"], j["metadata"]["uid"]) for j in jobs] == [("split-loadgen", job_uid)]

        await live.kubectl("wait", "--for=condition=SLOMet", "--timeout=60s", "lexp/split", timeout_s=70)
        status = status_of(live, "lexp", "split")
        assert status["phase"] == "Succeeded", dump(status)
        assert [s["index"] for s in status["stages"]] == [0, 1]
        assert all(s["sent"] > 0 and s["serviceRate"] == 1.0 for s in status["stages"]), dump(status)
        summary = json.loads(live.get("configmaps", "split-results")["data"]["summary.json"])  # type: ignore[index]
        assert summary["slo"]["met"] is True and summary["sent"] == status["sent"] > 0
        assert "incomplete" not in summary
        # The generators exit once the operator read their final numbers: the real Job controller
        # completes the Job.
        await eventually(lambda: (live.get("jobs", "split-loadgen") or {}).get("status", {}).get("succeeded") == 2,
                         timeout_s=30)
        _, out, _ = await live.kubectl("get", "lexp", "split")
        assert columns(out)[0]["PHASE"] == "Succeeded"
        # The kubectl plugin, found by the real kubectl on PATH, reads the same objects.
        rc, out, err = await plugin(live, "report", "split")
        assert rc == 0 and "SLO: MET" in out and "split-results" in out, (out, err)

        # The generator pods are deleted: the results survive in the cluster. ``report --output`` writes
        # the directory a generator writes (``kinfer loadgen --output``: the pods' own, read before the
        # deletion), plus each generator's records beside the merged records.csv.
        [own, *_] = sorted(kubelet.workdir.glob("pods/split-loadgen*/volumes/results"))
        own_names = sorted(p.name for p in own.iterdir())
        own_rows = (own / "records.csv").read_text().splitlines()
        await live.kubectl("delete", "pods", "-l", "batch.kubernetes.io/job-name=split-loadgen", "--wait=true",
                           "--timeout=60s", timeout_s=70)  # fmt: skip
        await eventually(lambda: not [p for p in live.list("pods") if p["metadata"]["name"].startswith("split-")],
                         timeout_s=60)  # fmt: skip
        out_dir = kubelet.workdir / "report"
        rc, out, err = await plugin(live, "report", "split", "--output", str(out_dir))
        assert rc == 0 and "SLO: MET" in out, (out, err)
        names = sorted(p.name for p in out_dir.iterdir())
        assert names == sorted([*own_names, "records-g0.csv", "records-g1.csv"]), (names, own_names)
        rows = (out_dir / "records.csv").read_text().splitlines()
        assert rows[0] == own_rows[0] and abs(len(rows) - len(own_rows)) <= 1, (len(rows), len(own_rows))
        header = rows[0].split(",")
        cpu = [r.split(",")[header.index("serverCPU")] for r in rows[1:]]
        assert "serverMemoryMB" in header and any(cpu), cpu  # the target's resources, on a cluster too
        written = json.loads((out_dir / "summary.json").read_text())
        assert written["sent"] == status["sent"] and written["durationS"] > 0 and written["sendLagMs"]
        chunks = live.list("configmaps", label_selector="kinfer.dev/experiment=split")
        assert "split-results-0" in {c["metadata"]["name"] for c in chunks}

        # Deleting the experiment removes its Job, pods, ConfigMaps (the stored results too) and Secret.
        await live.kubectl("delete", "lexp", "split", "--timeout=60s", timeout_s=70)
        await eventually(lambda: not live.list("jobs") and not live.list("configmaps", label_selector="kinfer.dev/"
                         "experiment=split") and live.get("secrets", "split-control") is None
                         and live.get("networkpolicies", "split-control") is None, timeout_s=60)
        await eventually(lambda: not [p for p in live.list("pods") if p["metadata"]["name"].startswith("split")],
                         timeout_s=60)
        await live.kubectl("delete", "kisvc", "target", "--timeout=60s", timeout_s=70)
        await eventually(lambda: not live.list("pods") and not live.list("services"), timeout_s=60)


async def test_stop_while_the_generators_are_pending_ends_the_experiment(
    live: LiveCluster, kubelet: Kubelet, operator: OperatorProcess
) -> None:
    async with running_operator(operator):
        status = await stop_before_start(live, "never")
    assert condition(status, "Progressing")["reason"] == "Stopped", dump(status)
    summary = json.loads(live.get("configmaps", "never-results")["data"]["summary.json"])  # type: ignore[index]
    assert summary["incomplete"] is True and "before any generator started" in summary["incompleteReason"]


async def test_only_intensity_and_stop_change_after_creation(live: LiveCluster) -> None:
    await live.kubectl("apply", "-f", "-", input=yaml.safe_dump(EXPERIMENT))
    await live.kubectl("patch", "lexp", "split", "--type=merge", "-p", '{"spec":{"intensity":40,"stop":true}}')
    for change in ('{"spec":{"parallelism":3}}', '{"spec":{"schedule":[{"rps":5,"duration":"1s"}]}}',
                   '{"spec":{"target":{"service":"other"}}}', '{"spec":{"requests":100}}'):
        rc, _, err = await live.kubectl("patch", "lexp", "split", "--type=merge", "-p", change, check=False)
        assert rc != 0 and "only spec.intensity and spec.stop can change" in err, (change, err)


async def test_a_results_volume_claim_is_admitted_under_restricted_pod_security(live: LiveCluster) -> None:
    """The generator pod with ``spec.results.volumeClaim`` passes the real Pod Security admission of a
    ``restricted`` namespace (server-side dry run of the Job's pod); the same pod with a hostPath results
    volume is refused there, so the check can fail."""
    doc = {**EXPERIMENT, "metadata": {"name": "claimed", "namespace": live.namespace, "uid": "u-1"},
           "spec": {**EXPERIMENT["spec"], "results": {"volumeClaim": "bench-results"}}}
    resource = parse_resource(doc)
    assert isinstance(resource, LoadExperiment)
    job = build_job(resource, "http://target:5000/gpu", Settings())
    spec = job["spec"]["template"]["spec"]
    assert spec["volumes"][1] == {"name": "results", "persistentVolumeClaim": {"claimName": "bench-results"}}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "claimed-check"}, "spec": spec}
    rc, _, err = await live.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
    assert rc == 0, err
    spec["volumes"][1] = {"name": "results", "hostPath": {"path": "/tmp/results"}}
    rc, _, err = await live.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
    assert rc != 0 and "hostPath" in err and "restricted" in err, err
