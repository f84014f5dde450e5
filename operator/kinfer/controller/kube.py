"""The one module that talks to the Kubernetes API.

Plain JSON over the ``kubernetes`` client's REST layer (it handles kubeconfig, in-cluster tokens, TLS
and exec plugins); objects stay dicts, as the builders produce them. Calls are blocking, so each runs in
a worker thread: the operator's event loop never waits on the network.

404 and 409 are tolerated only inside the idempotent helpers (:meth:`Kube.ensure`, :meth:`Kube.delete`);
everywhere else they surface as :class:`NotFound` / :class:`Conflict` for the caller to classify.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from kinfer.api import GROUP, VERSION


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
JOB = Kind("/apis/batch/v1", "jobs", "Job")
ISVC = Kind(f"/apis/{GROUP}/{VERSION}", "inferenceservices", "InferenceService")
LEXP = Kind(f"/apis/{GROUP}/{VERSION}", "loadexperiments", "LoadExperiment")
KINDS = {k.kind: k for k in (POD, SERVICE, CONFIGMAP, JOB, ISVC, LEXP)}


class KubeError(Exception):
    """The API answered with an error (or could not be reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class NotFound(KubeError):
    """404."""


class Conflict(KubeError):
    """409: already exists, or a concurrent write."""


def _error(status: int, body: bytes) -> KubeError:
    try:
        message = str(json.loads(body).get("message") or body[:200])
    except (ValueError, AttributeError):
        message = body[:200].decode(errors="replace")
    if status == 404:
        return NotFound(status, message)
    if status == 409:
        return Conflict(status, message)
    return KubeError(status, message)


class Kube:
    """A thin JSON client: get, list, create, patch, delete — dicts in, dicts out."""

    def __init__(self, api_client: Any) -> None:
        self._api = api_client

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster service account when running in a pod, else ``$KUBECONFIG`` / ``~/.kube/config``."""
        from kubernetes import client, config

        configuration = client.Configuration()
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
        """Release the connection pool."""
        self._api.close()

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
            raise _error(response.status, data)
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
        return await asyncio.to_thread(self._request, method, path, body, query, content_type)

    # --- reads ----------------------------------------------------------------------------------

    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or ``None`` when it does not exist."""
        try:
            return await self.call("GET", kind.path(namespace, name))
        except NotFound:
            return None

    async def list(self, kind: Kind, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Objects of a kind in a namespace carrying all ``labels``.

        The selector is also applied here: an API that ignores it (the test emulator) cannot leak
        another service's pods into a reconcile.
        """
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        result = await self.call("GET", kind.path(namespace), query={"labelSelector": selector})
        items = result.get("items") or []
        return [
            item
            for item in items
            if all(((item.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in labels.items())
        ]

    # --- idempotent writes ------------------------------------------------------------------------

    async def ensure(self, manifest: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the object unless one of that name exists: (the object, whether it was created).

        The name is deterministic, so a restarted operator finds what it created before and never
        creates it twice.
        """
        kind = KINDS[manifest["kind"]]
        meta = manifest["metadata"]
        try:
            return await self.call("POST", kind.path(meta["namespace"]), body=dict(manifest)), True
        except Conflict:
            existing = await self.get(kind, meta["namespace"], meta["name"])
            if existing is None:  # deleted between our POST and GET: let the caller retry
                raise
            return existing, False

    async def delete(self, kind: Kind, namespace: str, name: str, propagation: str = "Background") -> bool:
        """Delete the object; ``False`` when it was already gone."""
        try:
            await self.call(
                "DELETE",
                kind.path(namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation},
            )
            return True
        except NotFound:
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
        """Create a ConfigMap, or merge its ``data`` into the existing one of that name."""
        obj, created = await self.ensure(manifest)
        if created:
            return obj
        meta = manifest["metadata"]
        return await self.patch(CONFIGMAP, meta["namespace"], meta["name"], {"data": manifest.get("data", {})})
