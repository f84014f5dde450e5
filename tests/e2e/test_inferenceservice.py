"""InferenceService end to end: the operator in-process, the real kubectl, the test as the kubelet.

``kubectl apply`` the example's InferenceService → pod0 pinned to GPU 0 with the seed's four hostPath
mounts and 8 workers, NodePort 31500 → the real ``kinfer serve`` (null backend) becomes ready →
``kubectl get kisvc`` shows Ready with the endpoint; a deleted pod comes back; a disallowed hostPath
fails; lifecycle (scale, rolling replacement, restart, deletion) with pods marked ready directly.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kinfer.controller.settings import Settings
from tests.e2e.operator_harness import Kubelet, condition, install_crds, kinfer_operator, status_of
from tests.kube.cluster import Cluster, eventually
from tests.kube.kubectl import columns

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "mobilenet.yaml"
SETTINGS = Settings(hostpath_allow=("/home/tank",), metrics_port=0)


def example_isvc() -> dict[str, Any]:
    """The example's InferenceService document."""
    return next(d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["kind"] == "InferenceService")


def pod_env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0].get("env") or []}


async def test_example_becomes_ready_with_endpoint_and_heals_a_deleted_pod(
    cluster: Cluster, tmp_path: Path
) -> None:
    await install_crds(cluster)
    async with kinfer_operator(SETTINGS), Kubelet(cluster, tmp_path) as kubelet:
        _, out, _ = await cluster.kubectl("apply", "--validate=false", "-f", str(EXAMPLE))
        assert "inferenceservice.kinfer.dev/mobilenet created" in out
        assert "loadexperiment.kinfer.dev/mobilenet-load created" in out  # it starts once the service is Ready

        pod = await cluster.wait_for("pods", "mobilenet-pod0", timeout_s=10)
        assert pod is not None
        spec = pod["spec"]
        container = spec["containers"][0]
        assert spec["nodeName"] == "tank-node3"
        assert pod_env(pod)["CUDA_VISIBLE_DEVICES"] == "0"
        assert {v["hostPath"]["path"] for v in spec["volumes"]} == {
            "/home/tank/yanan/model", "/home/tank/yanan/data", "/home/tank/yanan/inference", "/home/tank/yanan/script",
        }
        assert [m["mountPath"] for m in container["volumeMounts"]] == [
            "/model", "/data", "/home/inference", "/home/script"]
        args = container["args"]
        assert args[args.index("--workers") + 1] == "8"
        assert args[args.index("--memory-fraction") + 1] == "0.01"
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "InferenceService"

        service = await cluster.wait_for("services", "mobilenet")
        assert service is not None
        assert service["spec"]["type"] == "NodePort"
        assert service["spec"]["ports"][0]["nodePort"] == 31500
        assert service["spec"]["selector"] == {"kinfer.dev/service": "mobilenet"}

        # The kubelet starts the real server; its readiness probe passes; the status says so.
        await cluster.kubectl("wait", "--for=condition=Ready", "--timeout=30s", "kisvc/mobilenet", timeout_s=40)
        [server] = kubelet.running("mobilenet-pod0")
        _, out, _ = await cluster.kubectl("get", "kisvc")
        [row] = columns(out)
        assert (row["READY"], row["REPLICAS"], row["WORKERS"], row["PHASE"]) == ("1", "1", "8", "Ready"), out
        assert row["ENDPOINT"] == f"http://{server.ip}:31500"
        status = status_of(cluster, "kisvc", "mobilenet")
        assert status["serviceURL"] == "http://mobilenet.default.svc.cluster.local:5000"
        assert status["pods"] == [
            {"name": "mobilenet-pod0", "phase": "Running", "ready": True, "node": "tank-node3", "podIP": server.ip}]
        assert status["observedGeneration"] == 1

        # Self-healing: a deleted pod is recreated and becomes ready again.
        old_uid = pod["metadata"]["uid"]
        await cluster.kubectl("delete", "pod", "mobilenet-pod0", "--wait=false")

        def recreated_and_ready() -> bool:
            new = cluster.get("pods", "mobilenet-pod0")
            return bool(new and new["metadata"]["uid"] != old_uid and status_of(cluster, "kisvc", "mobilenet").get(
                "readyReplicas") == 1 and status_of(cluster, "kisvc", "mobilenet")["pods"][0]["ready"]
                and new["metadata"]["uid"] in kubelet.pods)

        await eventually(recreated_and_ready, timeout_s=30)
        assert [n for n in kubelet.started if n.startswith("mobilenet-pod")] == ["mobilenet-pod0", "mobilenet-pod0"]
        _, out, _ = await cluster.kubectl("describe", "kisvc", "mobilenet")
        assert "PodCreated" in out, out


async def test_disallowed_host_path_fails_naming_it_and_creates_no_pod(cluster: Cluster, tmp_path: Path) -> None:
    await install_crds(cluster)
    async with kinfer_operator(Settings(hostpath_allow=("/srv/models",), metrics_port=0)):
        await cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(example_isvc()))
        await eventually(lambda: status_of(cluster, "kisvc", "mobilenet").get("phase") == "Failed", timeout_s=10)
        ready = condition(status_of(cluster, "kisvc", "mobilenet"), "Ready")
        assert ready["status"] == "False" and ready["reason"] == "HostPathNotAllowed"
        assert "spec.volumes[0].hostPath" in ready["message"] and "/home/tank/yanan/model" in ready["message"]
        _, out, _ = await cluster.kubectl("get", "kisvc", "mobilenet")
        assert columns(out)[0]["PHASE"] == "Failed"
        assert cluster.list("pods", "default") == []


def _null_isvc(name: str, replicas: int) -> dict[str, Any]:
    return {"apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": name},
            "spec": {"model": {"name": "null", "format": "null"}, "replicas": replicas, "workers": 1,
                     "service": {"type": "ClusterIP"}}}


def _pods(cluster: Cluster, name: str) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in cluster.list("pods", "default", f"kinfer.dev/service={name}")}


async def test_scale_rolling_replacement_restart_and_deletion(cluster: Cluster, tmp_path: Path) -> None:
    await install_crds(cluster)
    doc = _null_isvc("svc", 2)
    async with Kubelet(cluster, tmp_path, run_processes=False):
        async with kinfer_operator(SETTINGS):
            await cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(doc))
            await eventually(lambda: status_of(cluster, "kisvc", "svc").get("readyReplicas") == 2, timeout_s=30)
            assert set(_pods(cluster, "svc")) == {"svc-pod0", "svc-pod1"}
            assert status_of(cluster, "kisvc", "svc")["phase"] == "Ready"
            assert status_of(cluster, "kisvc", "svc").get("endpoint") is None  # ClusterIP: no node endpoint
            uids = {n: p["metadata"]["uid"] for n, p in _pods(cluster, "svc").items()}

        # Restarted operator: nothing is created twice.
        async with kinfer_operator(SETTINGS):
            await eventually(lambda: status_of(cluster, "kisvc", "svc").get("readyReplicas") == 2, timeout_s=30)
            assert {n: p["metadata"]["uid"] for n, p in _pods(cluster, "svc").items()} == uids
            assert len(cluster.list("services", "default")) == 1

            # A spec change replaces the pods one at a time and converges.
            changed = copy.deepcopy(doc)
            changed["spec"]["workers"] = 2
            await cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(changed))

            def replaced() -> bool:
                pods = _pods(cluster, "svc")
                return (len(pods) == 2 and all(p["metadata"]["uid"] not in uids.values() for p in pods.values())
                        and status_of(cluster, "kisvc", "svc").get("readyReplicas") == 2)

            await eventually(replaced, timeout_s=20)
            for pod in _pods(cluster, "svc").values():
                args = pod["spec"]["containers"][0]["args"]
                assert args[args.index("--workers") + 1] == "2"

            # Scale down.
            await cluster.kubectl("patch", "kisvc", "svc", "--type=merge", "-p", '{"spec":{"replicas":1}}')
            await eventually(lambda: set(_pods(cluster, "svc")) == {"svc-pod0"}, timeout_s=10)
            await eventually(lambda: status_of(cluster, "kisvc", "svc").get("replicas") == 1, timeout_s=10)

            # Deleting the resource removes everything it made.
            await cluster.kubectl("delete", "kisvc", "svc", "--timeout=20s")
            await eventually(lambda: not _pods(cluster, "svc") and not cluster.get("services", "svc"), timeout_s=10)


@pytest.mark.parametrize("scope", ["namespaced"])
async def test_metrics_and_health_endpoints(cluster: Cluster, tmp_path: Path, scope: str,
                                            unused_tcp_port: int) -> None:
    import aiohttp

    await install_crds(cluster)
    settings = Settings(metrics_port=unused_tcp_port, metrics_host="127.0.0.1")
    async with Kubelet(cluster, tmp_path, run_processes=False), kinfer_operator(settings):
        await cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(_null_isvc("m", 1)))
        await eventually(lambda: status_of(cluster, "kisvc", "m").get("phase") == "Ready", timeout_s=30)
        base = f"http://127.0.0.1:{unused_tcp_port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200

            async def gauge_shows_one() -> bool:
                async with session.get(f"{base}/metrics") as response:
                    text = await response.text()
                return 'kinfer_inferenceservice_ready_replicas{name="m",namespace="default"} 1.0' in text

            await eventually(gauge_shows_one, timeout_s=5)
