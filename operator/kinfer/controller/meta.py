"""Names, labels and owner references shared by the builders of both resources (pure functions)."""

from __future__ import annotations

import hashlib
import json
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

