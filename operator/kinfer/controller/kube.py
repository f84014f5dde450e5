"""The one module that talks to the Kubernetes API.

Plain JSON over the ``kubernetes`` client's REST layer (it handles kubeconfig, in-cluster tokens, TLS
and exec plugins); objects stay dicts, as the builders produce them. Calls are blocking, so each runs in
a worker thread: the operator's event loop never waits on the network.

404 and 409 are tolerated only inside the idempotent helpers (:meth:`Kube.ensure`, :meth:`Kube.delete`);
everywhere else they surface as :class:`NotFound` / :class:`Conflict` for the caller to classify.

Ownership (``metav1.IsControlledBy``): the helpers that find, patch or delete an object by name take the
uid of the resource that should control it, and never touch an object whose controller reference
carries another uid. Creating over a same-named foreign object raises :class:`NotOwned`, which the
handlers turn into a Failed condition naming that object.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from kinfer.api import GROUP, VERSION
from kinfer.controller.meta import controlled_by, controller_uid, describe_owner


@dataclass(frozen=True)
class Kind:
    """Where a resource type lives in the API: ``/api/v1`` or ``/apis/<group>/<version>`` + plural."""

    prefix: str
    plural: str
    kind: str

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        """URL path of the collection, one object, or one of its subresources."""
        out = f"{self.prefix}/namespaces/{quote(namespace)}/{self.plural}"
        if name is not None:
            out += f"/{quote(name)}"
        if subresource is not None:
            out += f"/{subresource}"
        return out


POD = Kind("/api/v1", "pods", "Pod")
SERVICE = Kind("/api/v1", "services", "Service")
CONFIGMAP = Kind("/api/v1", "configmaps", "ConfigMap")
SECRET = Kind("/api/v1", "secrets", "Secret")
JOB = Kind("/apis/batch/v1", "jobs", "Job")
LEASE = Kind("/apis/coordination.k8s.io/v1", "leases", "Lease")
NETWORK_POLICY = Kind("/apis/networking.k8s.io/v1", "networkpolicies", "NetworkPolicy")
ISVC = Kind(f"/apis/{GROUP}/{VERSION}", "inferenceservices", "InferenceService")
LEXP = Kind(f"/apis/{GROUP}/{VERSION}", "loadexperiments", "LoadExperiment")
KINDS = {k.kind: k for k in (POD, SERVICE, CONFIGMAP, SECRET, JOB, LEASE, NETWORK_POLICY, ISVC, LEXP)}


#: Answers that retrying the same request cannot change (the spec or the operator's permissions must).
PERMANENT = frozenset({400, 401, 403, 405, 413, 415, 422})

#: Refusals among those that a passing condition causes, by the API server's words. The admission check of
#: owner references (``blockOwnerDeletion``) looks the owner's kind up in the API server's discovery, which
#: learns a CRD installed moments ago only at its next refresh: until then an object owned by a brand-new
#: LoadExperiment or InferenceService is refused with 403, and the same request succeeds seconds later.
PASSING = ("cannot find RESTMapping for APIVersion",)


class KubeError(Exception):
    """The API answered with an error (or could not be reached)."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s
        """The server's ``Retry-After`` (429, 503), seconds."""

    @property
    def permanent(self) -> bool:
        """Refused for what was asked (403 Forbidden, 422 Invalid, ...), not for a passing condition."""
        return self.status in PERMANENT and not any(words in self.message for words in PASSING)


class NotFound(KubeError):
    """404."""


class Conflict(KubeError):
    """409: already exists, or a concurrent write."""


class NotOwned(KubeError):
    """An object of the wanted name exists and another owner (or none) controls it: never adopted."""

    def __init__(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        self.object_ref = f"{obj.get('kind', 'object')} {meta.get('namespace', '')}/{meta.get('name', '')}"
        super().__init__(
            409,
            f"{self.object_ref} already exists and is controlled by {describe_owner(obj)}, not by this "
            "resource; kinfer does not adopt, change or delete it (rename or remove it)",
        )

    @property
    def permanent(self) -> bool:
        """Retrying cannot help until someone removes or renames the other object."""
        return True


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _error(status: int, body: bytes, retry_after: str | None = None) -> KubeError:
    try:
        message = str(json.loads(body).get("message") or body[:200])
    except (ValueError, AttributeError):
        message = body[:200].decode(errors="replace")
    if status == 404:
        return NotFound(status, message)
    if status == 409:
        return Conflict(status, message)
    return KubeError(status, message, _retry_after(retry_after))


#: Concurrent API calls: the worker threads and the connection pool. Every running experiment makes a few
#: calls per record interval; with asyncio's default pool (cores + 4 threads) 50 experiments queue for a
#: thread and their 1 s status cadence stretches (tests/perf/bench_operator.py).
API_CONCURRENCY = 64


class Kube:
    """A thin JSON client: get, list, create, patch, delete — dicts in, dicts out."""

    def __init__(self, api_client: Any) -> None:
        self._api = api_client
        self._threads = concurrent.futures.ThreadPoolExecutor(API_CONCURRENCY, thread_name_prefix="kube-api")

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster service account when running in a pod, else ``$KUBECONFIG`` / ``~/.kube/config``."""
        from kubernetes import client, config

        configuration = client.Configuration()
        configuration.connection_pool_maxsize = API_CONCURRENCY
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            # kubernetes.config resolves $KUBECONFIG at import time; read it now instead.
            path = os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=path.split(os.pathsep)[0], client_configuration=configuration
            )
        return cls(client.ApiClient(configuration))

    def close(self) -> None:
        """Release the connection pool and the worker threads."""
        self._api.close()
        self._threads.shutdown(wait=False)

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        method, url, headers, body, _ = self._api.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        if query:
            url += "?" + urlencode(query)
        try:
            response = self._api.call_api(method, url, header_params=headers, body=body, _request_timeout=30)
        except Exception as exc:  # urllib3 connection errors: the API is unreachable
            raise KubeError(0, f"{method} {path}: {exc}") from exc
        data = response.read() or b"{}"
        if not 200 <= response.status < 300:
            raise _error(response.status, data, response.getheader("Retry-After"))
        result: dict[str, Any] = json.loads(data)
        return result

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One API call in a worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._request, method, path, body, query, content_type)

    # --- reads ----------------------------------------------------------------------------------

    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or ``None`` when it does not exist."""
        try:
            return await self.call("GET", kind.path(namespace, name))
        except NotFound:
            return None

    async def list(
        self, kind: Kind, namespace: str, labels: Mapping[str, str], owner_uid: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects of a kind in a namespace carrying all ``labels`` (and controlled by ``owner_uid``).

        Labels are anyone's to set, so a caller that acts on the result names the owner. The selector
        is also applied here: an API that ignores it (the test emulator) cannot leak another service's
        pods into a reconcile.
        """
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        result = await self.call("GET", kind.path(namespace), query={"labelSelector": selector})
        items = result.get("items") or []
        return [
            item
            for item in items
            if all(((item.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in labels.items())
            and (owner_uid is None or controlled_by(item, owner_uid))
        ]

    async def get_owned(self, kind: Kind, namespace: str, name: str, owner_uid: str | None) -> dict[str, Any] | None:
        """The object if it exists; :class:`NotOwned` if another owner controls it."""
        obj = await self.get(kind, namespace, name)
        if obj is not None and not controlled_by(obj, owner_uid):
            raise NotOwned({"kind": kind.kind, **obj})
        return obj

    # --- idempotent writes ------------------------------------------------------------------------

    async def ensure(self, manifest: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the object unless one of that name exists: (the object, whether it was created).

        The name is deterministic, so a restarted operator finds what it created before and never
        creates it twice. An existing object counts only if the manifest's controller (its owner
        reference's uid) controls it; otherwise :class:`NotOwned`.
        """
        kind = KINDS[manifest["kind"]]
        meta = manifest["metadata"]
        try:
            return await self.call("POST", kind.path(meta["namespace"]), body=dict(manifest)), True
        except Conflict:
            existing = await self.get(kind, meta["namespace"], meta["name"])
            if existing is None:  # deleted between our POST and GET: let the caller retry
                raise
            if not controlled_by(existing, controller_uid(manifest)):
                raise NotOwned({"kind": kind.kind, **existing}) from None
            return existing, False

    async def delete(
        self, kind: Kind, namespace: str, name: str, owner_uid: str | None, propagation: str = "Background"
    ) -> bool:
        """Delete the object if ``owner_uid`` controls it; ``False`` when it was gone or is not ours.

        The delete carries the found object's uid as a precondition, so an object re-created under the
        same name by someone else in between is not deleted either.
        """
        obj = await self.get(kind, namespace, name)
        if obj is None or not controlled_by(obj, owner_uid):
            return False
        try:
            await self.call(
                "DELETE",
                kind.path(namespace, name),
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": propagation,
                    "preconditions": {"uid": obj["metadata"]["uid"]},
                },
            )
            return True
        except (NotFound, Conflict):
            return False

    # --- patches --------------------------------------------------------------------------------

    async def patch(self, kind: Kind, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the main resource."""
        return await self.call(
            "PATCH", kind.path(namespace, name), body=dict(patch), content_type="application/merge-patch+json"
        )

    async def patch_status(self, kind: Kind, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the ``status`` subresource (``None`` values delete fields)."""
        return await self.call(
            "PATCH",
            kind.path(namespace, name, "status"),
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )

    async def replace_data(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create a ConfigMap, or merge its ``data`` into the existing one of that name (if ours)."""
        obj, created = await self.ensure(manifest)
        if created:
            return obj
        meta = manifest["metadata"]
        return await self.patch(CONFIGMAP, meta["namespace"], meta["name"], {"data": manifest.get("data", {})})
