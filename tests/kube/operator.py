"""Run a kopf operator in the test's event loop, against the emulated cluster ($KUBECONFIG).

``kopf.operator()`` cancels pytest-asyncio's teardown on exit, so the tasks are spawned and run
with ``kopf.spawn_tasks`` + ``kopf.run_tasks(..., ignored=<tasks that existed before>)``; the
context manager sets the stop flag on exit and waits for the operator to finish.

Handlers that use the synchronous ``kubernetes`` client must be plain ``def`` functions (kopf runs
them in a thread): a blocking call in an ``async def`` would stall the emulator on the same loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection
from typing import Any

import kopf


def new_registry() -> kopf.OperatorRegistry:
    """An empty registry that logs in like kopf's default one (the kubernetes client, $KUBECONFIG)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    return registry


def test_settings() -> kopf.OperatorSettings:
    """Settings for tests: no peering, log lines posted as Events, short timeouts."""
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    settings.posting.loggers = True  # handlers' log lines become Events (kubectl describe shows them)
    settings.queueing.exit_timeout = 2.0
    settings.watching.reconnect_backoff = 0.1
    settings.networking.request_timeout = 30.0
    return settings


test_settings.__test__ = False  # type: ignore[attr-defined]  # a factory, not a test, when imported into one


@contextlib.asynccontextmanager
async def running_operator(
    registry: kopf.OperatorRegistry,
    *,
    namespaces: Collection[str] = ('default',),
    settings: kopf.OperatorSettings | None = None,
    memo: object | None = None,
    startup_timeout: float = 10.0,
) -> AsyncIterator[asyncio.Task[None]]:
    """Run kopf with ``registry`` until the block exits; yields once the operator is ready."""
    settings = settings or test_settings()
    # Without logging configured, kopf.objects drops INFO records before they can be posted as Events.
    objects_logger = logging.getLogger('kopf.objects')
    saved_level = objects_logger.level
    objects_logger.setLevel(min(objects_logger.getEffectiveLevel(), settings.posting.level))
    ignored = asyncio.all_tasks()
    stop_flag: asyncio.Event = asyncio.Event()
    ready_flag: asyncio.Event = asyncio.Event()
    tasks = await kopf.spawn_tasks(
        registry=registry, settings=settings, standalone=True,
        clusterwide=not namespaces, namespaces=namespaces, stop_flag=stop_flag, ready_flag=ready_flag,
        memo=memo,
    )
    operator = asyncio.create_task(kopf.run_tasks(tasks, ignored=ignored), name='kopf operator')
    try:
        async with asyncio.timeout(startup_timeout):
            done, _ = await asyncio.wait([operator, asyncio.ensure_future(ready_flag.wait())],
                                         return_when=asyncio.FIRST_COMPLETED)
        if operator in done:
            operator.result()  # raises what stopped it
            raise RuntimeError('the operator exited during startup')
        yield operator
    finally:
        stop_flag.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(operator, timeout=15)
        objects_logger.setLevel(saved_level)
