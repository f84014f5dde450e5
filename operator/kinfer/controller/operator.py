"""Assemble and run the operator: kopf settings, the shared :class:`Runtime`, health and metrics.

``kinfer operator`` calls :func:`run`; the e2e tests call :func:`spawn` in their own event loop with
the same registry, so what is tested is what ships.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Collection
from typing import Any

import kopf

# Importing the handler modules registers them on REGISTRY.
from kinfer.controller import isvc as _isvc
from kinfer.controller import lexp as _lexp
from kinfer.controller import sweep as _sweep
from kinfer.controller.kube import Kube
from kinfer.controller.leader import LeaderElection
from kinfer.controller.metrics import OperatorMetrics, serve
from kinfer.controller.runtime import REGISTRY, Runtime, runtime
from kinfer.controller.settings import Settings

__all__ = ["REGISTRY", "memo_for", "run", "spawn"]
_HANDLER_MODULES = (_isvc, _lexp, _sweep)
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
    rt.role = "leading" if rt.role == "standing-by" else rt.role
    if rt.health_server is None:
        await start_health(rt)


@kopf.on.cleanup(registry=REGISTRY)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Stop the metrics server (the API client is closed by whoever made it: :func:`run` or a test)."""
    rt = runtime(memo)
    if rt.health_server is not None:
        await rt.health_server.cleanup()
        rt.health_server = None


#: kopf's watchers the operator cannot work without (kopf names each task ``watcher for <resource>@<ns>``).
WATCHED = (
    "inferenceservices.v1alpha1.kinfer.dev",
    "loadexperiments.v1alpha1.kinfer.dev",
    "sweeps.v1alpha1.kinfer.dev",
    "pods.v1",
)


def health(rt: Runtime) -> tuple[str, list[str]]:
    """``/healthz``: a standby is alive; an acting operator needs a live kopf watcher per resource.

    kopf's watch loops reconnect by themselves and end only on an unrecoverable error (a watch the API
    refuses, a crashed stream): a missing watcher means the operator no longer sees changes.
    """
    if rt.role == "standing-by":
        return rt.role, []
    names = [t.get_name() for t in asyncio.all_tasks() if not t.done()]
    missing = [w for w in WATCHED if not any(n.startswith(f"watcher for {w}@") for n in names)]
    return rt.role, [f"no live watcher for {w}" for w in missing]


async def start_health(rt: Runtime) -> None:
    """Serve ``/healthz`` and ``/metrics`` (unless the port is 0)."""
    if rt.settings.metrics_port:
        rt.health_server = await serve(
            rt.metrics, rt.settings.metrics_host, rt.settings.metrics_port, functools.partial(health, rt)
        )
        log.info("serving /healthz and /metrics on %s:%d", rt.settings.metrics_host, rt.settings.metrics_port)


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
    """Run until SIGINT/SIGTERM; with a lease namespace, only while this process holds the Lease."""
    kube = Kube.from_environment()
    try:
        await _run(settings, kube)
    finally:
        kube.close()


async def _run(settings: Settings, kube: Kube) -> None:
    memo = memo_for(settings, kube)
    if settings.lease_namespace is None:
        await kopf.operator(registry=REGISTRY, memo=memo, standalone=True, **_scope(settings))
        return
    rt = runtime(memo)
    rt.role = "standing-by"
    await start_health(rt)  # a standby answers its liveness probe
    election = LeaderElection(
        kube, settings.lease_namespace, lease_s=settings.lease_s, renew_s=settings.lease_s / 3, name=settings.lease_name
    )
    await election.acquire()
    operator = asyncio.create_task(
        kopf.operator(registry=REGISTRY, memo=memo, standalone=True, **_scope(settings)), name="kopf operator"
    )
    keeper = asyncio.create_task(election.keep(), name="lease keeper")
    done, _ = await asyncio.wait({operator, keeper}, return_when=asyncio.FIRST_COMPLETED)
    for task in (operator, keeper):
        if task not in done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if operator in done and operator.exception() is None:  # a clean stop (SIGTERM): hand over at once
        await election.release()
    for task in done:
        task.result()  # LostLeadership (or what ended kopf) propagates: the process exits
    if rt.health_server is not None:  # kopf's cleanup stops it only once kopf started
        await rt.health_server.cleanup()
