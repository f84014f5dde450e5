"""InferenceService builders: full expected Pod and Service for the example, schema-valid manifests for
every variant, the reconcile plan (create, scale down, one-at-a-time replacement) and the status."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kinfer.api import InferenceService, parse_resource
from kinfer.controller import isvc_build as build
from kinfer.controller.meta import TEMPLATE_HASH
from kinfer.controller.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = Settings(hostpath_allow=("/home/tank",))
LABELS = {
    "app.kubernetes.io/name": "kinfer-model-server",
    "app.kubernetes.io/instance": "mobilenet",
    "app.kubernetes.io/component": "model-server",
    "app.kubernetes.io/part-of": "kinfer",
    "app.kubernetes.io/managed-by": "kinfer-operator",
    "kinfer.dev/service": "mobilenet",
}
OWNER = {"apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService", "name": "mobilenet", "uid": "u-1",
         "controller": True, "blockOwnerDeletion": True}


def example_doc() -> dict[str, Any]:
    doc = next(d for d in yaml.safe_load_all((ROOT / "examples/mobilenet.yaml").read_text())
               if d["kind"] == "InferenceService")
    doc["metadata"].update(namespace="default", uid="u-1", generation=1)
    return doc


def isvc_of(doc: dict[str, Any]) -> InferenceService:
    resource = parse_resource(doc)
    assert isinstance(resource, InferenceService)
    return resource


def valid(manifest: dict[str, Any]) -> dict[str, Any]:
    kubernetes_validate.validate(manifest, "1.32", strict=True)
    return manifest


def probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": 2,
            "failureThreshold": failures}


RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                  "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_example_pod_is_the_seeds_pod() -> None:
    pod = valid(build.build_pod(isvc_of(example_doc()), 0, SETTINGS))
    spec = {
        "restartPolicy": "Always",
        "securityContext": RESTRICTED_POD,
        "automountServiceAccountToken": False,
        "containers": [{
            "name": "server",
            "image": "kinfer/model-server:0.1.0",
            "command": ["kinfer"],
            "args": ["serve", "--format", "tf-graphdef", "--model-name", "ssd-mobilenet",
                     "--model", "/model/ssd_mobilenet_v1_coco_2018_01_28.pb", "--known-model", "ssd-mobilenet",
                     "--dataset", "/data/coco-300/val2017", "--workers", "8", "--threads", "1",
                     "--max-batch-size", "1", "--max-delay-ms", "0", "--memory-fraction", "0.01",
                     "--host", "0.0.0.0", "--port", "5000"],
            "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "CUDA_VISIBLE_DEVICES", "value": "0"}],
            "ports": [{"name": "http", "containerPort": 5000, "protocol": "TCP"}],
            "startupProbe": probe("/v2/health/live", 5, 60),
            "readinessProbe": probe("/v2/health/ready", 5, 3),
            "livenessProbe": probe("/v2/health/live", 10, 6),
            "securityContext": RESTRICTED_CONTAINER,
            "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "8Gi"}},
            "volumeMounts": [
                {"name": "model-path", "mountPath": "/model", "readOnly": True},
                {"name": "data-path", "mountPath": "/data", "readOnly": True},
                # not marked in the spec: read-only, as the allow-list entry has no :rw
                {"name": "code-path", "mountPath": "/home/inference", "readOnly": True},
                {"name": "script-path", "mountPath": "/home/script", "readOnly": True},
            ],
        }],
        "volumes": [
            {"name": "model-path", "hostPath": {"path": "/home/tank/yanan/model"}},
            {"name": "data-path", "hostPath": {"path": "/home/tank/yanan/data"}},
            {"name": "code-path", "hostPath": {"path": "/home/tank/yanan/inference"}},
            {"name": "script-path", "hostPath": {"path": "/home/tank/yanan/script"}},
        ],
        "nodeName": "tank-node3",
    }
    assert pod == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "mobilenet-pod0",
            "namespace": "default",
            "labels": {**LABELS, "kinfer.dev/replica": "0"},
            "annotations": {TEMPLATE_HASH: pod["metadata"]["annotations"][TEMPLATE_HASH]},
            "ownerReferences": [OWNER],
        },
        "spec": spec,
    }
    assert len(pod["metadata"]["annotations"][TEMPLATE_HASH]) == 10


def test_example_service_is_a_nodeport_on_31500() -> None:
    assert valid(build.build_service(isvc_of(example_doc()))) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "mobilenet", "namespace": "default", "labels": LABELS, "ownerReferences": [OWNER]},
        "spec": {
            "type": "NodePort",
            "selector": {"kinfer.dev/service": "mobilenet"},
            "ports": [{"name": "http", "port": 5000, "targetPort": "http", "protocol": "TCP", "nodePort": 31500}],
        },
    }


def test_gpu_count_requests_whole_gpus_and_resources_pass_through() -> None:
    doc = example_doc()
    doc["spec"]["gpu"] = {"count": 2}
    doc["spec"]["resources"] = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": 4, "memory": "8Gi"}}
    doc["spec"].pop("nodeName")
    doc["spec"]["nodeSelector"] = {"nvidia.com/gpu.present": "true"}
    doc["spec"]["batching"] = {"maxBatchSize": 8, "maxDelayMs": 2.5}
    pod = valid(build.build_pod(isvc_of(doc), 1, SETTINGS))
    container = pod["spec"]["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "2"},
    }
    assert "CUDA_VISIBLE_DEVICES" not in {e["name"] for e in container["env"]}
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"} and "nodeName" not in pod["spec"]
    assert pod["metadata"]["name"] == "mobilenet-pod1"
    args = container["args"]
    assert args[args.index("--max-batch-size") + 1] == "8" and args[args.index("--max-delay-ms") + 1] == "2.5"


def test_minimal_null_service_uses_the_operators_default_image_and_clusterip() -> None:
    doc = {"apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService",
           "metadata": {"name": "calib", "namespace": "bench", "uid": "u-2"},
           "spec": {"model": {"name": "calib", "format": "null", "delayMs": 5, "delayDistribution": "exponential"},
                    "service": {"type": "ClusterIP"}, "port": 8000}}
    isvc = isvc_of(doc)
    settings = Settings(server_image="registry.local/model-server:dev")
    pod = valid(build.build_pod(isvc, 0, settings))
    container = pod["spec"]["containers"][0]
    assert container["image"] == "registry.local/model-server:dev"
    assert container["args"] == ["serve", "--format", "null", "--model-name", "calib", "--delay-ms", "5",
                                 "--delay-distribution", "exponential", "--workers", "1", "--threads", "1",
                                 "--max-batch-size", "1", "--max-delay-ms", "0", "--host", "0.0.0.0",
                                 "--port", "8000"]
    assert "volumes" not in pod["spec"]
    assert container["resources"] == build.DEFAULT_RESOURCES
    service = valid(build.build_service(isvc))
    assert service["spec"] == {"type": "ClusterIP", "selector": {"kinfer.dev/service": "calib"},
                               "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]}
    assert build.service_url(isvc, settings) == "http://calib.bench.svc.cluster.local:8000"
    # An explicit image in the spec wins over the operator's default.
    doc["spec"]["image"] = "mine:1"
    assert build.build_pod(isvc_of(doc), 0, settings)["spec"]["containers"][0]["image"] == "mine:1"


def test_host_path_outside_the_allow_list_is_refused_naming_the_field() -> None:
    with pytest.raises(build.SpecRefused) as info:
        build.check_host_paths(isvc_of(example_doc()), Settings(hostpath_allow=("/home/tank/yanan/model",)))
    assert info.value.field == "spec.volumes[1].hostPath"
    assert info.value.reason == "HostPathNotAllowed"
    assert "'/home/tank/yanan/data'" in str(info.value) and "/home/tank/yanan/model" in str(info.value)
    build.check_host_paths(isvc_of(example_doc()), SETTINGS)  # allowed: no error


def test_host_path_mounts_are_read_only_unless_the_allow_list_says_rw() -> None:
    rw = Settings(hostpath_allow=("/home/tank/yanan/model", "/home/tank/yanan/data", "/home/tank/yanan"),
                  hostpath_writable=("/home/tank/yanan",))
    mounts = build.build_pod(isvc_of(example_doc()), 0, rw)["spec"]["containers"][0]["volumeMounts"]
    # The longest matching entry decides: model and data stay read-only (also asked so by the spec),
    # code and script fall under the writable /home/tank/yanan.
    assert [m["readOnly"] for m in mounts] == [True, True, False, False]
    doc = example_doc()
    doc["spec"]["volumes"][2]["readOnly"] = False
    with pytest.raises(build.SpecRefused) as info:
        build.check_host_paths(isvc_of(doc), SETTINGS)
    assert (info.value.field, info.value.reason) == ("spec.volumes[2].readOnly", "HostPathReadOnly")
    assert "an entry ending in :rw allows writes" in str(info.value)
    build.check_host_paths(isvc_of(doc), rw)


def test_template_hash_changes_with_the_spec_only() -> None:
    doc = example_doc()
    a = build.template_hash(isvc_of(doc), SETTINGS)
    doc["metadata"]["labels"] = {"team": "x"}
    assert build.template_hash(isvc_of(doc), SETTINGS) == a
    doc["spec"]["workers"] = 4
    assert build.template_hash(isvc_of(doc), SETTINGS) != a


def pod(name: str, hash_: str = "h", ready: bool = True, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "annotations": {TEMPLATE_HASH: hash_}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": "Running", "hostIP": "10.0.0.3", "podIP": "10.1.0.7",
                                         "conditions": [{"type": "Ready", "status": str(ready)}]}}


def replicas(n: int) -> InferenceService:
    doc = example_doc()
    doc["spec"]["replicas"] = n
    return isvc_of(doc)


def test_plan_creates_missing_and_deletes_surplus_pods() -> None:
    assert build.plan_pods(replicas(3), [pod("mobilenet-pod1")], "h") == build.Plan(create=(0, 2))
    assert build.plan_pods(replicas(1), [pod("mobilenet-pod0"), pod("mobilenet-pod1"), pod("other")], "h") == \
        build.Plan(delete=("mobilenet-pod1",))
    assert build.plan_pods(replicas(2), [pod("mobilenet-pod0"), pod("mobilenet-pod1")], "h").empty


def test_plan_replaces_one_outdated_pod_at_a_time_while_the_others_are_ready() -> None:
    pods = [pod("mobilenet-pod0", "old"), pod("mobilenet-pod1", "old")]
    assert build.plan_pods(replicas(2), pods, "new") == build.Plan(delete=("mobilenet-pod0",))
    # pod0 is being replaced: nothing else happens until it is back.
    pods = [pod("mobilenet-pod0", "old", deleting=True), pod("mobilenet-pod1", "old")]
    assert build.plan_pods(replicas(2), pods, "new").empty
    # pod0 is back but not ready: pod1 waits.
    pods = [pod("mobilenet-pod0", "new", ready=False), pod("mobilenet-pod1", "old")]
    assert build.plan_pods(replicas(2), pods, "new").empty
    pods = [pod("mobilenet-pod0", "new"), pod("mobilenet-pod1", "old")]
    assert build.plan_pods(replicas(2), pods, "new") == build.Plan(delete=("mobilenet-pod1",))
    # A single replica is replaced at once, ready or not.
    assert build.plan_pods(replicas(1), [pod("mobilenet-pod0", "old", ready=False)], "new") == \
        build.Plan(delete=("mobilenet-pod0",))


def test_a_corrected_spec_reaches_crash_looping_replicas() -> None:
    # Both replicas of the old spec crash (never ready): they serve nothing, so both are replaced at once.
    pods = [pod("mobilenet-pod0", "old", ready=False), pod("mobilenet-pod1", "old", ready=False)]
    assert build.plan_pods(replicas(2), pods, "new") == build.Plan(delete=("mobilenet-pod0", "mobilenet-pod1"))
    # One crashing, one serving: the crashing one goes first and the serving one waits for it.
    pods = [pod("mobilenet-pod0", "old"), pod("mobilenet-pod1", "old", ready=False)]
    assert build.plan_pods(replicas(2), pods, "new") == build.Plan(delete=("mobilenet-pod1",))
    # A new pod that crashes too holds the rollout of the ready old one (availability budget spent).
    pods = [pod("mobilenet-pod0", "old"), pod("mobilenet-pod1", "new", ready=False)]
    assert build.plan_pods(replicas(2), pods, "new").empty


def test_observe_and_endpoint() -> None:
    service = valid(build.build_service(isvc_of(example_doc())))
    two = replicas(2)
    assert build.observe(two, [pod("mobilenet-pod0"), pod("mobilenet-pod1")]).phase == "Ready"
    degraded = build.observe(two, [pod("mobilenet-pod0"), pod("mobilenet-pod1", ready=False)])
    assert (degraded.phase, degraded.ready, degraded.message) == ("Degraded", 1, "1/2 pods ready")
    assert build.observe(two, []).phase == "Pending"
    assert build.endpoint([pod("mobilenet-pod0", ready=False), pod("mobilenet-pod1")], service) == \
        "http://10.0.0.3:31500"
    assert build.endpoint([pod("mobilenet-pod0", ready=False)], service) is None
    allocated = copy.deepcopy(service)
    allocated["spec"]["ports"][0]["nodePort"] = 30123
    assert build.endpoint([pod("mobilenet-pod0")], allocated) == "http://10.0.0.3:30123"
    assert build.pod_status(pod("mobilenet-pod0", deleting=True)).wire() == {
        "name": "mobilenet-pod0", "phase": "Terminating", "ready": False, "node": "10.0.0.3", "podIP": "10.1.0.7"}


@pytest.mark.parametrize(("resources", "expected"), [
    # the user's value wins per key; the other defaults stay
    ({"limits": {"cpu": "2"}}, {"requests": {"memory": "1Gi"}, "limits": {"memory": "8Gi", "cpu": "2"}}),
    # a smaller limit pulls the default request down with it (a request above its limit is invalid)
    ({"limits": {"memory": "512Mi"}}, {"requests": {"memory": "512Mi"}, "limits": {"memory": "512Mi"}}),
    # a larger request lifts the default limit
    ({"requests": {"memory": "16Gi"}}, {"requests": {"memory": "16Gi"}, "limits": {"memory": "16Gi"}}),
    ({"requests": {"memory": "2G"}, "limits": {"memory": "3G"}},
     {"requests": {"memory": "2G"}, "limits": {"memory": "3G"}}),
])
def test_memory_defaults_apply_unless_the_spec_overrides_them(
    resources: dict[str, Any], expected: dict[str, Any]
) -> None:
    doc = example_doc()
    doc["spec"]["resources"] = resources
    pod = valid(build.build_pod(isvc_of(doc), 0, SETTINGS))
    assert pod["spec"]["containers"][0]["resources"] == expected
