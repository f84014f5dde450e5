"""The operator's ``/healthz`` is 200 only while kopf watches every resource it needs, and an
InferenceService whose pod changed behind the operator's back is reconciled by the resync loop
(``KINFER_OPERATOR_RESYNC_S``) even when no event says so."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import yaml

from kinfer.controller.settings import Settings
from tests.e2e.operator_harness import Kubelet, install_crds, kinfer_operator, status_of
from tests.kube.cluster import Cluster, eventually

SERVER = {"apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "watched"},
          "spec": {"model": {"name": "null", "format": "null"}, "service": {"type": "ClusterIP"}}}


async def healthz(port: int) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as response:
        return response.status, await response.json()


async def test_healthz_fails_when_a_watcher_is_dead(cluster: Cluster, unused_tcp_port: int) -> None:
    await install_crds(cluster)
    settings = Settings(metrics_port=unused_tcp_port, metrics_host="127.0.0.1")
    async with kinfer_operator(settings):
        async def healthy() -> bool:
            return (await healthz(unused_tcp_port))[0] == 200

        await eventually(healthy, timeout_s=10)  # 503 until kopf has started its watchers
        assert await healthz(unused_tcp_port) == (200, {"status": "standalone"})
        [watcher] = [t for t in asyncio.all_tasks() if t.get_name().startswith("watcher for loadexperiments.")]
        watcher.cancel()
        await eventually(lambda: not [t for t in asyncio.all_tasks() if t is watcher], timeout_s=5)
        status, body = await healthz(unused_tcp_port)
        assert status == 503, body
        assert body["problems"] == ["no live watcher for loadexperiments.v1alpha1.kinfer.dev"], body


async def test_resync_reconciles_what_no_event_reported(cluster: Cluster, tmp_path: Path) -> None:
    await install_crds(cluster)
    settings = Settings(metrics_port=0, resync_s=1.0)
    async with Kubelet(cluster, tmp_path, run_processes=False), kinfer_operator(settings):
        await cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(SERVER))
        await eventually(lambda: status_of(cluster, "kisvc", "watched").get("phase") == "Ready", timeout_s=20)
        # The pod turns unready in the store directly, with the pod watch silenced: only the resync sees it.
        [pods_watcher] = [t for t in asyncio.all_tasks() if t.get_name().startswith("watcher for pods.")]
        pods_watcher.cancel()
        pod = cluster.get("pods", "watched-pod0")
        assert pod is not None
        conditions = [{**c, "status": "False"} if c["type"] == "Ready" else c for c in pod["status"]["conditions"]]
        cluster.patch("pods", "watched-pod0", {"status": {"conditions": conditions}}, subresource="status")
        await eventually(lambda: status_of(cluster, "kisvc", "watched").get("phase") == "Pending", timeout_s=5)
