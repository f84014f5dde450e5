"""The operator under API faults injected into the emulated API server (kmock reactions): 500s, 409s
and 429s with ``Retry-After`` on the calls that create the run are retried with backoff, the run starts
exactly once, and the operator keeps serving (no crash loop)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import kmock
import yaml

from kinfer.controller.settings import Settings
from tests.e2e.operator_harness import Kubelet, dump, install_crds, kinfer_operator, status_of
from tests.kube.cluster import Cluster, eventually

SERVER = {"apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "target"},
          "spec": {"model": {"name": "null", "format": "null"}, "service": {"type": "ClusterIP"}}}
EXPERIMENT = {"apiVersion": "kinfer.dev/v1alpha1", "kind": "LoadExperiment", "metadata": {"name": "faulty"},
              "spec": {"target": {"service": "target"}, "arrival": "uniform", "windowSize": 2,
                       "schedule": [{"rps": 10, "duration": "3s"}], "slo": {"p99Ms": 1000}}}


def status_body(code: int, reason: str) -> dict[str, object]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
            "message": f"injected {code}"}


async def test_500_409_and_429_are_retried_and_the_run_starts_once(
    cluster: Cluster, tmp_path: Path, unused_tcp_port: int
) -> None:
    await install_crds(cluster)
    emulator = cluster.emulator
    jobs = emulator["post", kmock.resource("batch/v1/jobs")][:2] << 500 << status_body(500, "InternalError")
    configmaps = (emulator["post", kmock.resource("v1/configmaps")][:1] << 429
                  << kmock.headers({"Retry-After": "1"}) << status_body(429, "TooManyRequests"))
    statuses = (emulator["patch", kmock.resource("kinfer.dev/v1alpha1/loadexperiments")][:2]
                << 409 << status_body(409, "Conflict"))
    settings = Settings(metrics_port=unused_tcp_port, metrics_host="127.0.0.1", results_linger_s=20, max_backoff_s=4)
    async with Kubelet(cluster, tmp_path) as kubelet, kinfer_operator(settings):
        await cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump_all([SERVER, EXPERIMENT]))
        await eventually(lambda: status_of(cluster, "lexp", "faulty").get("phase") == "Succeeded", timeout_s=60)
        assert len(list(jobs)) == 2 and len(list(configmaps)) == 1 and len(list(statuses)) == 2  # all were hit
        assert [j["metadata"]["name"] for j in cluster.list("jobs", "default")] == ["faulty-loadgen"]
        assert len(kubelet.running("faulty-loadgen")) + len(
            [r for r in kubelet.pods.values() if r.name.startswith("faulty-loadgen") and r.finished]) == 1
        status = status_of(cluster, "lexp", "faulty")
        assert status["sent"] > 0, dump(status)
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{unused_tcp_port}/healthz") as response:
            assert response.status == 200  # still watching, never crashed


async def test_an_owner_kind_not_mapped_yet_is_retried_not_failed(cluster: Cluster, tmp_path: Path) -> None:
    """Right after the CRDs are installed the API server may refuse an object owned by a kinfer resource
    with 403 "cannot find RESTMapping" (its discovery has not learned the kind yet). That passes: the
    InferenceService and the LoadExperiment retry and run, neither is Failed."""
    await install_crds(cluster)
    emulator = cluster.emulator

    def not_mapped(resource: str, kind: str) -> dict[str, object]:
        return {**status_body(403, "Forbidden"), "message": (
            f'{resource} "x" is forbidden: cannot set blockOwnerDeletion in this case because cannot find '
            f'RESTMapping for APIVersion kinfer.dev/v1alpha1 Kind {kind}: no matches for kind "{kind}" in '
            'version "kinfer.dev/v1alpha1"')}

    pods = emulator["post", kmock.resource("v1/pods")][:2] << 403 << not_mapped("pods", "InferenceService")
    configmaps = (emulator["post", kmock.resource("v1/configmaps")][:2]
                  << 403 << not_mapped("configmaps", "LoadExperiment"))
    settings = Settings(metrics_port=0, results_linger_s=20, max_backoff_s=2)
    async with Kubelet(cluster, tmp_path), kinfer_operator(settings):
        await cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump_all([SERVER, EXPERIMENT]))
        await eventually(lambda: status_of(cluster, "lexp", "faulty").get("phase") == "Succeeded", timeout_s=60)
        assert len(list(pods)) == 2 and len(list(configmaps)) == 2  # both refusals were answered
        assert status_of(cluster, "kisvc", "target").get("phase") == "Ready"
        assert status_of(cluster, "lexp", "faulty")["sent"] > 0
