"""The cluster tier: the real control plane of ``make kube-up``, real kubectl and Helm, real RBAC and Pod
Security. What runs here:

- the control plane is started once per session (``hack/kube-up.sh``, which builds the binaries on first
  use) and stopped at the end if this session started it;
- the chart is installed with Helm (``replicas=0``: the operator runs as a local process with the
  chart's ServiceAccount token, so every call it makes is authorized by the chart's own RBAC);
- each test gets a fresh namespace that enforces the ``restricted`` Pod Security level, an operator
  watching it, and a test kubelet (``tests/e2e/operator_harness.Kubelet``) that runs the pods the
  scheduler binds to the one Node and reports their status.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.cluster.live import (
    KUBECTL,
    NODE,
    ControlPlane,
    LiveCluster,
    OperatorProcess,
    restricted_namespace,
)
from tests.e2e.operator_harness import Kubelet
from tests.kube.cluster import eventually
from tests.kube.kubectl import Kubectl


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture()
async def live(control_plane: ControlPlane, tmp_path: Path) -> AsyncIterator[LiveCluster]:
    """The real cluster, as the admin, scoped to a fresh ``restricted`` namespace (deleted afterwards)."""
    cache = tmp_path / "kube-cache"
    cache.mkdir()
    runner = Kubectl(control_plane.kubeconfig, cache, binary=KUBECTL)
    cluster = LiveCluster(control_plane, runner)
    cluster.namespace = restricted_namespace(cluster)
    runner.namespace = cluster.namespace
    # Pods need the namespace's default ServiceAccount, which the controller manager creates.
    await eventually(lambda: cluster.get("serviceaccounts", "default") is not None, timeout_s=30)
    try:
        yield cluster
    finally:
        # No operator removes kinfer's finalizers and no kubelet finishes pods after the test: do both,
        # so that the namespace really goes.
        for resource in ("sweeps", "loadexperiments", "inferenceservices"):
            for obj in cluster.list(resource):
                if obj["metadata"].get("finalizers"):
                    cluster.patch(resource, obj["metadata"]["name"], {"metadata": {"finalizers": None}})
        for pod in cluster.list("pods"):
            cluster.delete("pods", pod["metadata"]["name"], grace_period_s=0)
        cluster.delete("namespaces", cluster.namespace, namespace=None)


@pytest_asyncio.fixture()
async def kubelet(live: LiveCluster, tmp_path: Path) -> AsyncIterator[Kubelet]:
    """The test kubelet of the one Node, for the test's namespace."""
    async with Kubelet(live, tmp_path, namespace=live.namespace, play_jobs=False, node_name=NODE) as running:
        yield running


@pytest.fixture()
def operator(control_plane: ControlPlane, live: LiveCluster, tmp_path: Path) -> OperatorProcess:
    """``kinfer operator`` for the test's namespace as the chart's ServiceAccount (not started yet)."""
    kubeconfig = control_plane.service_account_kubeconfig(tmp_path / "operator.kubeconfig")
    return OperatorProcess(kubeconfig, live.namespace, tmp_path / "operator.log", free_port(),
                           env={"KINFER_OPERATOR_RESULTS_LINGER_S": "20"})
