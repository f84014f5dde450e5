"""One emulated cluster for a test: the API server on a free loopback port, a kubeconfig, kubectl."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import kmock

from tests.kube.emulator import KubeEmulator, Obj
from tests.kube.kubectl import Kubectl, KubectlResult, KubectlStream, write_kubeconfig

T = TypeVar('T')


@attrs.define
class Cluster:
    """What a test gets: the emulator (the store), its URL, a kubeconfig, and kubectl against it."""

    emulator: KubeEmulator
    url: str
    kubeconfig: Path
    kubectl_runner: Kubectl

    async def kubectl(
        self, *args: str, input: str | bytes | None = None, check: bool = True, timeout_s: float = 60.0,
    ) -> KubectlResult:
        """Run the real kubectl: ``rc, out, err = await cluster.kubectl('get', 'pods')``."""
        return await self.kubectl_runner(*args, input=input, check=check, timeout_s=timeout_s)

    def kubectl_stream(self, *args: str) -> contextlib.AbstractAsyncContextManager[KubectlStream]:
        """``async with cluster.kubectl_stream('get', 'widgets', '-w') as out: await out.wait_for_line(...)``."""
        return self.kubectl_runner.stream(*args)

    # The store, directly (no HTTP): for assertions and for playing controllers or the kubelet.

    def get(self, resource: str, name: str, namespace: str | None = 'default') -> Obj | None:
        return self.emulator.get_object(resource, name, namespace)

    def list(self, resource: str, namespace: str | None = None, label_selector: str | None = None) -> list[Obj]:
        return self.emulator.list_objects(resource, namespace, label_selector)

    def create(self, resource: str, body: dict[str, Any], namespace: str | None = None) -> Obj:
        return self.emulator.create_object(resource, body, namespace)

    def patch(self, resource: str, name: str, patch: Any, namespace: str | None = 'default', *,
              subresource: str | None = None) -> Obj:
        return self.emulator.patch_object(resource, name, patch, namespace, subresource=subresource)

    def delete(self, resource: str, name: str, namespace: str | None = 'default') -> Obj:
        return self.emulator.delete_object(resource, name, namespace)

    async def wait_for(self, resource: str, name: str, namespace: str | None = 'default', *,
                       until: Callable[[Obj | None], bool] = lambda obj: obj is not None,
                       timeout_s: float = 10.0) -> Obj | None:
        """Wait until the object (``None`` when absent) satisfies ``until``."""
        return await self.emulator.wait_for_object(resource, name, namespace, until=until, timeout_s=timeout_s)


async def eventually(check: Callable[[], T | Awaitable[T]], *, timeout_s: float = 10.0, interval: float = 0.05,
                     explain: Callable[[], str] | None = None) -> T:
    """Poll ``check`` until it returns a truthy value (or stops raising AssertionError); then return it.

    ``explain``, when given, is called once on timeout and its text is added to the failure, so that a
    wait that fails in CI says what the cluster looked like then (pods, jobs, events, process logs)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            result = check()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return result
            failure: Exception = AssertionError(f'{check!r} stayed falsy for {timeout_s}s')
        except AssertionError as exc:
            failure = exc
        if loop.time() > deadline:
            if explain is not None:
                raise AssertionError(f'{failure}\n{explain()}') from failure
            raise failure
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def run_cluster(workdir: Path, *, namespaces: tuple[str, ...] = ('default',)) -> AsyncIterator[Cluster]:
    """Serve an emulated cluster on 127.0.0.1 (a free port) with the builtin resources and ``namespaces``."""
    emulator = KubeEmulator()
    emulator.load_builtin_resources()
    async with emulator, kmock.Server(emulator) as server:
        url = f'http://{server.host}:{server.port}'
        for namespace in namespaces:
            emulator.create_object('v1/namespaces', {'metadata': {'name': namespace}})
        kubeconfig = write_kubeconfig(workdir / 'kubeconfig', url)
        cache = workdir / 'kube-cache'
        cache.mkdir(exist_ok=True)
        try:
            yield Cluster(emulator=emulator, url=url, kubeconfig=kubeconfig,
                          kubectl_runner=Kubectl(kubeconfig, cache))
        finally:
            emulator.stop_streams()


def kubeconfig_env(cluster: Cluster) -> dict[str, str]:
    """The environment for subprocesses that should talk to the emulator (``KUBECONFIG`` set)."""
    return {**os.environ, 'KUBECONFIG': str(cluster.kubeconfig)}
