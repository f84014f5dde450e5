"""InferenceServices on the real control plane: admission (schema, CEL names, Pod Security ``restricted``),
pods and Service, self-healing, the real garbage collector, and objects kinfer does not own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.cluster.live import LiveCluster, OperatorProcess, running_operator
from tests.e2e.operator_harness import Kubelet, condition, dump, status_of
from tests.kube.cluster import eventually

ROOT = Path(__file__).resolve().parents[2]


def null_service(name: str, replicas: int = 1) -> dict[str, Any]:
    return {"apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": name},
            "spec": {"model": {"name": "null", "format": "null"}, "replicas": replicas,
                     "service": {"type": "ClusterIP"}}}


async def test_every_example_is_accepted_with_server_side_validation(live: LiveCluster) -> None:
    _, out, _ = await live.kubectl("apply", "--validate=strict", "-f", str(ROOT / "examples"))
    docs = [d for f in sorted((ROOT / "examples").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    for doc in docs:
        assert live.get({"InferenceService": "inferenceservices", "LoadExperiment": "loadexperiments",
                         "Sweep": "sweeps"}[doc["kind"]], doc["metadata"]["name"]) is not None, out
    # The same validation refuses an unknown field, naming it (kubectl never gets --validate=false here).
    bad = null_service("typo")
    bad["spec"]["wrokers"] = 2
    rc, _, err = await live.kubectl("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert rc != 0 and 'unknown field "spec.wrokers"' in err, err


async def test_names_that_cannot_work_are_refused_at_admission_with_the_reason(live: LiveCluster) -> None:
    rc, _, err = await live.kubectl("apply", "-f", "-", input=yaml.safe_dump(null_service("1svc")), check=False)
    assert rc != 0 and "it names the Service (a DNS label starting with a letter)" in err, err
    long_name = "x" * 56  # its Job, <name>-loadgen, would be 64 characters
    experiment = {"apiVersion": "kinfer.dev/v1alpha1", "kind": "LoadExperiment", "metadata": {"name": long_name},
                  "spec": {"target": {"url": "http://127.0.0.1:1"}, "schedule": [{"rps": 1, "duration": "1s"}]}}
    rc, _, err = await live.kubectl("apply", "-f", "-", input=yaml.safe_dump(experiment), check=False)
    assert rc != 0 and "at most 55 characters" in err, err
    experiment["metadata"]["name"] = "x" * 55
    await live.kubectl("apply", "-f", "-", input=yaml.safe_dump(experiment))


async def test_restricted_pods_serve_behind_a_service_heal_and_are_collected_with_their_owner(
    live: LiveCluster, kubelet: Kubelet, operator: OperatorProcess
) -> None:
    async with running_operator(operator):
        await live.kubectl("apply", "-f", "-", input=yaml.safe_dump(null_service("detector", replicas=2)))
        await live.kubectl("wait", "--for=condition=Ready", "kisvc/detector", "--timeout=60s", timeout_s=70)
        status = status_of(live, "inferenceservices", "detector")
        assert status["readyReplicas"] == 2 and status["phase"] == "Ready", dump(status)
        assert status["serviceURL"] == f"http://detector.{live.namespace}.svc.cluster.local:5000"
        pods = {p["metadata"]["name"]: p for p in live.list("pods")}
        assert set(pods) == {"detector-pod0", "detector-pod1"}
        for pod in pods.values():  # admitted under `restricted`, scheduled by the real scheduler
            assert pod["spec"]["nodeName"] == "kinfer-local"
            assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
            assert pod["spec"]["automountServiceAccountToken"] is False
        service = live.get("services", "detector")
        assert service is not None and service["spec"]["selector"] == {"kinfer.dev/service": "detector"}
        # (The endpoints controllers refuse the pods' loopback addresses, so the test kubelet plays
        # cluster DNS and routing itself: a Service URL reaches a ready pod behind that Service.)

        # A pod that disappears is replaced.
        old_uid = pods["detector-pod1"]["metadata"]["uid"]
        await live.kubectl("delete", "pod", "detector-pod1", "--wait=false")
        await eventually(lambda: (live.get("pods", "detector-pod1") or {}).get("metadata", {}).get("uid")
                         not in (None, old_uid), timeout_s=30)
        await live.kubectl("wait", "--for=condition=Ready", "kisvc/detector", "--timeout=60s", timeout_s=70)

        # Deleting the InferenceService empties the namespace (finalizer, then the garbage collector).
        await live.kubectl("delete", "kisvc", "detector", "--timeout=60s", timeout_s=70)
        await eventually(lambda: not live.list("pods") and live.get("services", "detector") is None, timeout_s=60)
        assert not kubelet.running("detector"), kubelet.log_tail()


async def test_pod_security_refusal_is_a_failed_condition_quoting_the_api_server(
    live: LiveCluster, kubelet: Kubelet, operator: OperatorProcess
) -> None:
    # The seed's example mounts host paths: the operator's allow-list admits them, the namespace's
    # `restricted` level does not.
    [service, _] = yaml.safe_load_all((ROOT / "examples" / "mobilenet.yaml").read_text())
    service["spec"].pop("nodeName")
    operator.env["KINFER_OPERATOR_HOSTPATH_ALLOW"] = "/home/tank/yanan"
    async with running_operator(operator):
        await live.kubectl("apply", "-f", "-", input=yaml.safe_dump(service))
        await eventually(lambda: status_of(live, "inferenceservices", "mobilenet").get("phase") == "Failed",
                         timeout_s=30)
        ready = condition(status_of(live, "inferenceservices", "mobilenet"), "Ready")
        assert ready["reason"] == "APIRefused403", dump(ready)
        assert 'violates PodSecurity "restricted:latest"' in ready["message"], dump(ready)
        assert 'use restricted volume type "hostPath"' in ready["message"], dump(ready)
        assert not live.list("pods")


async def test_a_same_named_object_of_someone_else_is_never_adopted_changed_or_deleted(
    live: LiveCluster, kubelet: Kubelet, operator: OperatorProcess
) -> None:
    theirs = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shared", "labels": {"team": "b"}},
              "spec": {"type": "ClusterIP", "selector": {"app": "theirs"}, "ports": [{"port": 80}]}}
    live.create("services", theirs)
    async with running_operator(operator):
        await live.kubectl("apply", "-f", "-", input=yaml.safe_dump(null_service("shared")))
        await eventually(lambda: status_of(live, "inferenceservices", "shared").get("phase") == "Failed",
                         timeout_s=30)
        ready = condition(status_of(live, "inferenceservices", "shared"), "Ready")
        assert ready["reason"] == "NotOwned", dump(ready)
        assert f"Service {live.namespace}/shared already exists" in ready["message"], dump(ready)
        await live.kubectl("delete", "kisvc", "shared", "--timeout=60s", timeout_s=70)
    service = live.get("services", "shared")
    assert service is not None and service["spec"]["selector"] == {"app": "theirs"}, dump(service)
    assert service["spec"]["ports"][0]["port"] == 80 and not service["metadata"].get("ownerReferences")
