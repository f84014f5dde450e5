"""Pure builders for an InferenceService: server pods, the Service, and the status from what exists.

Nothing here talks to the API; every function maps typed input to plain manifests (dicts), so the
unit tests compare full expected objects and validate them against the Kubernetes 1.32 schemas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kinfer.api import InferenceService
from kinfer.api.commands import serve_args
from kinfer.api.common import Resources
from kinfer.api.inferenceservice import PodStatus, Volume
from kinfer.controller.meta import (
    REPLICA_LABEL,
    SERVICE_LABEL,
    TEMPLATE_HASH,
    container_security_context,
    content_hash,
    owner_reference,
    pod_security_context,
    standard_labels,
)
from kinfer.controller.settings import Settings

CONTAINER = "server"
COMPONENT = "model-server"
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
#: Memory of a server pod unless ``spec.resources`` says otherwise (per key): a request the scheduler can
#: place by, and a limit so that one pod decoding oversized images cannot take its node's memory.
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {"requests": {"memory": "1Gi"}, "limits": {"memory": "8Gi"}}


class SpecRefused(ValueError):
    """The spec is valid by the schema but the operator will not run it; ``field`` names what."""

    def __init__(self, field: str, reason: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = reason


def pod_name(name: str, index: int) -> str:
    """``<name>-pod<index>``, as the seed named its pod."""
    return f"{name}-pod{index}"


def pod_index(name: str, pod: str) -> int | None:
    """The index of a pod named by :func:`pod_name`, else ``None``."""
    prefix = f"{name}-pod"
    rest = pod.removeprefix(prefix)
    return int(rest) if pod.startswith(prefix) and rest.isdigit() else None


def selector(name: str) -> dict[str, str]:
    """Labels that select the server pods of one InferenceService."""
    return {SERVICE_LABEL: name}


def check_host_paths(isvc: InferenceService, settings: Settings) -> None:
    """Refuse hostPath volumes outside the operator's allow-list (raises :class:`SpecRefused`)."""
    for index, volume in enumerate(isvc.spec.volumes or []):
        access = settings.hostpath_access(volume.host_path)
        if access is None:
            allowed = ", ".join(settings.hostpath_allow) or "none"
            raise SpecRefused(
                f"spec.volumes[{index}].hostPath",
                "HostPathNotAllowed",
                f"host path {volume.host_path!r} of volume {volume.name!r} is outside the operator's "
                f"allow-list (KINFER_OPERATOR_HOSTPATH_ALLOW: {allowed})",
            )
        if volume.read_only is False and access != "rw":
            raise SpecRefused(
                f"spec.volumes[{index}].readOnly",
                "HostPathReadOnly",
                f"volume {volume.name!r} asks for a writable mount of {volume.host_path!r}, which the operator's "
                "allow-list grants read-only (an entry ending in :rw allows writes)",
            )


def mount_read_only(volume: Volume, settings: Settings) -> bool:
    """The spec's ``readOnly``, or read-only unless the allow-list grants the path ``:rw``."""
    if volume.read_only is not None:
        return volume.read_only
    return settings.hostpath_access(volume.host_path) != "rw"


def server_args(isvc: InferenceService) -> list[str]:
    """``kinfer serve`` arguments for the spec (DESIGN §9), listening on every address of the pod."""
    return serve_args(isvc, "0.0.0.0", isvc.spec.port)


def _resources(resources: Resources | None, gpus: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {part: dict(amounts) for part, amounts in DEFAULT_RESOURCES.items()}
    if resources is not None:
        for part in ("requests", "limits"):
            amounts = getattr(resources, part)
            if amounts is not None:
                out[part].update({k: str(v) for k, v in amounts.wire().items()})
    # A default must never contradict what the user set: the request stays within the limit.
    request, limit = out["requests"]["memory"], out["limits"]["memory"]
    if memory_bytes(request) > memory_bytes(limit):
        user_set_request = resources is not None and resources.requests is not None and resources.requests.memory
        if user_set_request:
            out["limits"]["memory"] = request
        else:
            out["requests"]["memory"] = limit
    if gpus is not None:
        out.setdefault("limits", {})["nvidia.com/gpu"] = str(gpus)
    return out


_SUFFIX = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def memory_bytes(quantity: str) -> float:
    """A memory quantity in bytes (``"512Mi"``, ``"1G"``, ``"1e9"``); only for comparing two of them."""
    text = str(quantity).strip()
    for suffix in sorted(_SUFFIX, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            return float(text[: -len(suffix)]) * _SUFFIX[suffix]
    return float(text)


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def pod_spec(isvc: InferenceService, settings: Settings) -> dict[str, Any]:
    """The pod's ``spec`` (everything the template hash covers)."""
    spec = isvc.spec
    image = spec.image if "image" in spec.model_fields_set else settings.server_image
    env: list[dict[str, str]] = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    gpus: int | None = None
    if spec.gpu is not None:
        if spec.gpu.devices is not None:
            env.append({"name": "CUDA_VISIBLE_DEVICES", "value": spec.gpu.devices})
        gpus = spec.gpu.count
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "command": ["kinfer"],
        "args": server_args(isvc),
        "env": env,
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        # Model loading (TensorFlow graph + warm-up in every worker) can take minutes: the startup
        # probe gives it five before liveness counts; readiness is the server's own "loaded" flag.
        "startupProbe": _probe(LIVE_PATH, 5, 60),
        "readinessProbe": _probe(READY_PATH, 5, 3),
        "livenessProbe": _probe(LIVE_PATH, 10, 6),
        "securityContext": container_security_context(),
    }
    resources = _resources(spec.resources, gpus)
    if resources:
        container["resources"] = resources
    volumes = spec.volumes or []
    if volumes:
        container["volumeMounts"] = [
            {"name": v.name, "mountPath": v.mount_path, "readOnly": mount_read_only(v, settings)} for v in volumes
        ]
    out: dict[str, Any] = {
        "restartPolicy": "Always",
        "containers": [container],
        "securityContext": pod_security_context(),
        "automountServiceAccountToken": False,  # the server never calls the API
    }
    if volumes:
        out["volumes"] = [{"name": v.name, "hostPath": {"path": v.host_path}} for v in volumes]
    if spec.node_name:
        out["nodeName"] = spec.node_name
    if spec.node_selector:
        out["nodeSelector"] = dict(spec.node_selector)
    return out


def template_hash(isvc: InferenceService, settings: Settings) -> str:
    """Hash of the pod template: a pod whose annotation differs is outdated and gets replaced."""
    return content_hash(pod_spec(isvc, settings))


def _owner(isvc: InferenceService) -> dict[str, Any]:
    return owner_reference("InferenceService", isvc.name, isvc.metadata.uid or "")


def build_pod(isvc: InferenceService, index: int, settings: Settings) -> dict[str, Any]:
    """Server pod ``<name>-pod<index>``."""
    spec = pod_spec(isvc, settings)
    labels = {
        **standard_labels("kinfer-model-server", isvc.name, COMPONENT),
        SERVICE_LABEL: isvc.name,
        REPLICA_LABEL: str(index),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(isvc.name, index),
            "namespace": isvc.namespace,
            "labels": labels,
            "annotations": {TEMPLATE_HASH: content_hash(spec)},
            "ownerReferences": [_owner(isvc)],
        },
        "spec": spec,
    }


def build_service(isvc: InferenceService) -> dict[str, Any]:
    """The Service in front of the pods (NodePort by default, as the seed exposed its server)."""
    svc = isvc.spec.service_or_default
    port: dict[str, Any] = {"name": "http", "port": isvc.spec.port, "targetPort": "http", "protocol": "TCP"}
    if svc.type == "NodePort" and svc.node_port is not None:
        port["nodePort"] = svc.node_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": isvc.name,
            "namespace": isvc.namespace,
            "labels": {**standard_labels("kinfer-model-server", isvc.name, COMPONENT), SERVICE_LABEL: isvc.name},
            "ownerReferences": [_owner(isvc)],
        },
        "spec": {"type": svc.type, "selector": selector(isvc.name), "ports": [port]},
    }


def service_url(isvc: InferenceService, settings: Settings) -> str:
    """In-cluster URL of the Service (what a LoadExperiment's generator sends to)."""
    return f"http://{isvc.name}.{isvc.namespace}.svc.{settings.cluster_domain}:{isvc.spec.port}"


# --- reconcile plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What to do to converge the pods: create these, delete those (one replacement at a time)."""

    create: tuple[int, ...] = ()
    delete: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing to do."""
        return not self.create and not self.delete


def is_ready(pod: Mapping[str, Any]) -> bool:
    """The pod's Ready condition is True and it is not being deleted."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def plan_pods(isvc: InferenceService, pods: Sequence[Mapping[str, Any]], wanted_hash: str) -> Plan:
    """Create missing pods, delete surplus ones, and replace outdated pods within an availability budget.

    As a Deployment with ``maxUnavailable: 1``: an outdated pod that is not ready serves nothing, so it
    is replaced at once (a corrected spec reaches crash-looping replicas); a ready outdated pod is
    replaced only while no other wanted pod is unavailable, one at a time (a single replica at once).
    Pods being deleted count as present (their name is still taken) and as unavailable.
    """
    by_index: dict[int, Mapping[str, Any]] = {}
    delete: list[str] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        index = pod_index(isvc.name, meta.get("name", ""))
        if index is None:
            continue
        if index >= isvc.spec.replicas:
            if not meta.get("deletionTimestamp"):
                delete.append(meta["name"])
            continue
        by_index[index] = pod
    create = tuple(i for i in range(isvc.spec.replicas) if i not in by_index)

    def outdated(pod: Mapping[str, Any]) -> bool:
        meta = pod.get("metadata") or {}
        return not meta.get("deletionTimestamp") and (meta.get("annotations") or {}).get(TEMPLATE_HASH) != wanted_hash

    stale = sorted(i for i, pod in by_index.items() if outdated(pod))
    stale_unready = [i for i in stale if not is_ready(by_index[i])]
    delete.extend(pod_name(isvc.name, i) for i in stale_unready)
    stale_ready = [i for i in stale if i not in stale_unready]
    if stale_ready and not stale_unready:
        unavailable = len(create) + sum(1 for i, p in by_index.items() if i != stale_ready[0] and not is_ready(p))
        if unavailable == 0 or isvc.spec.replicas == 1:
            delete.append(pod_name(isvc.name, stale_ready[0]))
    return Plan(create=create, delete=tuple(sorted(delete)))


# --- status ----------------------------------------------------------------------------------------


def pod_status(pod: Mapping[str, Any]) -> PodStatus:
    """One pod as status.pods[] shows it."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    return PodStatus(
        name=meta.get("name", ""),
        phase="Terminating" if meta.get("deletionTimestamp") else status.get("phase", "Pending"),
        ready=is_ready(pod),
        node=(pod.get("spec") or {}).get("nodeName") or status.get("hostIP"),
        pod_ip=status.get("podIP"),
    )


def node_port_of(service: Mapping[str, Any] | None) -> int | None:
    """The (fixed or allocated) node port of the Service, if any."""
    if not service or (service.get("spec") or {}).get("type") != "NodePort":
        return None
    for port in (service.get("spec") or {}).get("ports") or []:
        if port.get("nodePort"):
            return int(port["nodePort"])
    return None


def endpoint(pods: Sequence[Mapping[str, Any]], service: Mapping[str, Any] | None) -> str | None:
    """``http://<nodeIP>:<nodePort>`` from the first ready pod's host IP (NodePort services only)."""
    node_port = node_port_of(service)
    if node_port is None:
        return None
    for pod in sorted(pods, key=lambda p: (p.get("metadata") or {}).get("name", "")):
        host_ip = (pod.get("status") or {}).get("hostIP")
        if is_ready(pod) and host_ip:
            return f"http://{host_ip}:{node_port}"
    return None


@dataclass(frozen=True)
class Observed:
    """The service's phase and readiness summary, computed from its pods."""

    phase: str
    ready: int
    existing: int
    reason: str
    message: str


def observe(isvc: InferenceService, pods: Sequence[Mapping[str, Any]]) -> Observed:
    """Phase Ready (all wanted pods ready), Degraded (some), Pending (none yet)."""
    wanted = isvc.spec.replicas
    own = [p for p in pods if (pod_index(isvc.name, (p.get("metadata") or {}).get("name", "")) or 0) < wanted]
    ready = sum(1 for p in own if is_ready(p))
    existing = len(pods)
    if ready >= wanted:
        return Observed("Ready", ready, existing, "AllReplicasReady", f"{ready}/{wanted} pods ready")
    if ready > 0:
        return Observed("Degraded", ready, existing, "ReplicasNotReady", f"{ready}/{wanted} pods ready")
    return Observed("Pending", ready, existing, "PodsNotReady", f"0/{wanted} pods ready")
