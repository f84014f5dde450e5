"""The e2e tier: an emulated Kubernetes API server per test, driven by kopf in-process and the real kubectl.

``cluster`` is a :class:`tests.kube.cluster.Cluster`: ``cluster.url``, ``cluster.kubeconfig``,
``await cluster.kubectl(*args, input=None, check=True) -> (rc, stdout, stderr)``,
``cluster.kubectl_stream(*args)`` for ``get -w``, and the store directly: ``cluster.get/list/create/
patch/delete/wait_for`` (``cluster.emulator`` is the :class:`tests.kube.emulator.KubeEmulator`).
``$KUBECONFIG`` points at the emulator for subprocesses and for the ``kubernetes`` client (hence kopf).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.kube.cluster import Cluster, run_cluster

ROOT = Path(__file__).resolve().parents[2]


@pytest_asyncio.fixture()
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    """An emulated cluster with the builtin resources and the ``default`` namespace, as $KUBECONFIG."""
    async with run_cluster(tmp_path) as running:
        monkeypatch.setenv('KUBECONFIG', str(running.kubeconfig))
        try:
            import kubernetes.config.kube_config
        except ImportError:  # the operator extra is not installed: kubectl and the store still work
            pass
        else:
            monkeypatch.setattr(kubernetes.config.kube_config, 'KUBE_CONFIG_DEFAULT_LOCATION',
                                str(running.kubeconfig))
        yield running


@pytest.fixture()
def repo_root() -> Path:
    return ROOT
