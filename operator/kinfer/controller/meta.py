"""Names, labels and owner references shared by the builders of both resources (pure functions)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from kinfer.api import API_VERSION

PART_OF = "kinfer"
MANAGED_BY = "kinfer-operator"
#: Label naming the InferenceService a server pod or Service belongs to.
SERVICE_LABEL = "kinfer.dev/service"
#: Label naming the LoadExperiment a generator Job, pod or ConfigMap belongs to.
EXPERIMENT_LABEL = "kinfer.dev/experiment"
#: Label with a server pod's index (``<name>-pod<index>``).
REPLICA_LABEL = "kinfer.dev/replica"
#: Annotation with the hash of the pod template a pod was built from (spec changes replace pods).
TEMPLATE_HASH = "kinfer.dev/template-hash"


def standard_labels(name: str, instance: str, component: str) -> dict[str, str]:
    """The ``app.kubernetes.io/*`` labels every object the operator creates carries."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    """A controller owner reference: deleting the owner garbage-collects the object."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def content_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able object (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]



#: The user and group the kinfer images run as (``USER 10001`` in images/*/Dockerfile).
RUN_AS = 10001


def pod_security_context() -> dict[str, Any]:
    """The pod-level part of the ``restricted`` Pod Security Standard: non-root, the runtime's seccomp
    profile; the group owns the pod's volumes (emptyDir results are writable by the user)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """The container-level part of ``restricted``: no privilege escalation, every capability dropped."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The uid in the object's controller owner reference, if it has one."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid") or "") or None
    return None


def controlled_by(obj: Mapping[str, Any], uid: str | None) -> bool:
    """Whether ``obj``'s controller reference carries ``uid`` (``metav1.IsControlledBy``)."""
    return bool(uid) and controller_uid(obj) == uid


def describe_owner(obj: Mapping[str, Any]) -> str:
    """Who controls ``obj``, for messages: ``Kind/name (uid …)`` or ``no controller``."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return f"{ref.get('kind')}/{ref.get('name')} (uid {ref.get('uid')})"
    return "no controller"
