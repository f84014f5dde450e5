"""``kinfer operator`` as a real process against the emulated cluster: health, metrics, a reconcile,
and a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
import yaml

from tests.e2e.operator_harness import install_crds, status_of
from tests.kube.cluster import Cluster, eventually

KINFER = str(Path(sys.executable).with_name("kinfer"))
SERVICE = {"apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "cli"},
           "spec": {"model": {"name": "null", "format": "null"}, "replicas": 2}}


async def _get(url: str) -> tuple[int, str]:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status, await response.text()
    except aiohttp.ClientError:
        return 0, ""


async def test_kinfer_operator_process_serves_health_and_reconciles(
    cluster: Cluster, tmp_path: Path, unused_tcp_port: int
) -> None:
    await install_crds(cluster)
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "KINFER_OPERATOR_METRICS_HOST": "127.0.0.1"}
    log = (tmp_path / "operator.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        KINFER, "operator", "--namespace", "default", "--metrics-port", str(unused_tcp_port),
        env=env, stdout=log, stderr=asyncio.subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{unused_tcp_port}"
        await eventually(lambda: _healthy(base), timeout_s=20)
        await cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(SERVICE))
        await eventually(lambda: status_of(cluster, "kisvc", "cli").get("replicas") == 2, timeout_s=15)
        assert {p["metadata"]["name"] for p in cluster.list("pods", "default")} == {"cli-pod0", "cli-pod1"}
        assert status_of(cluster, "kisvc", "cli")["phase"] == "Pending"  # nobody plays the kubelet here
        _, metrics = await _get(f"{base}/metrics")
        assert 'kinfer_operator_reconciles_total{kind="InferenceService",outcome="ok"}' in metrics
    finally:
        if proc.returncode is None:
            proc.terminate()
        code = await asyncio.wait_for(proc.wait(), 20)
        log.close()
    assert code == 0, (tmp_path / "operator.log").read_text()[-3000:]


async def _healthy(base: str) -> bool:
    status, _ = await _get(f"{base}/healthz")
    return status == 200
