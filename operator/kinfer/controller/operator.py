"""Assemble and run the operator: kopf settings, the shared :class:`Runtime`, health and metrics.

``kinfer operator`` calls :func:`run`; the e2e tests call :func:`spawn` in their own event loop with
the same registry, so what is tested is what ships.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any

import kopf

# Importing the handler modules registers them on REGISTRY.
from kinfer.controller import isvc as _isvc
from kinfer.controller import lexp as _lexp
from kinfer.controller.kube import Kube
from kinfer.controller.metrics import OperatorMetrics, serve
from kinfer.controller.runtime import REGISTRY, Runtime, runtime
from kinfer.controller.settings import Settings

__all__ = ["REGISTRY", "memo_for", "run", "spawn"]
_HANDLER_MODULES = (_isvc, _lexp)
log = logging.getLogger("kinfer.operator")
PREFIX = "kinfer.dev"


@kopf.on.login(registry=REGISTRY)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own connection: the same kubeconfig / in-cluster credentials as :class:`Kube`."""
    info: kopf.ConnectionInfo | None = kopf.login_via_client(**kwargs)
    return info


@kopf.on.startup(registry=REGISTRY)
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """kopf's state in annotations under kinfer.dev (status is schema-declared: kopf's would be pruned)."""
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.reconnect_backoff = 1.0
    rt = runtime(memo)
    if rt.settings.metrics_port:
        memo["metrics_runner"] = await serve(rt.metrics, rt.settings.metrics_host, rt.settings.metrics_port)
        log.info("serving /healthz and /metrics on %s:%d", rt.settings.metrics_host, rt.settings.metrics_port)


@kopf.on.cleanup(registry=REGISTRY)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Stop the metrics server and close the API client."""
    runner = memo.get("metrics_runner")
    if runner is not None:
        await runner.cleanup()
    runtime(memo).kube.close()


def memo_for(settings: Settings, kube: Kube) -> kopf.Memo:
    """kopf's memo carrying a fresh :class:`Runtime`."""
    return kopf.Memo(kinfer=Runtime(settings=settings, kube=kube, metrics=OperatorMetrics()))


def _scope(settings: Settings) -> dict[str, Any]:
    if settings.namespace:
        return {"namespaces": [settings.namespace], "clusterwide": False}
    return {"clusterwide": True}


async def spawn(
    settings: Settings,
    kube: Kube,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> Collection[asyncio.Task[Any]]:
    """The operator's tasks in the running loop (for :func:`kopf.run_tasks`), standalone (no peering)."""
    return await kopf.spawn_tasks(
        registry=REGISTRY,
        memo=memo_for(settings, kube),
        standalone=True,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        **_scope(settings),
    )


async def run(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM."""
    kube = Kube.from_environment()
    await kopf.operator(registry=REGISTRY, memo=memo_for(settings, kube), standalone=True, **_scope(settings))
