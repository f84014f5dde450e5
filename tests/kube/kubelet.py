"""Play the kubelet (and the scheduler, and the Job controller) for pods nothing would run here.

The emulator stores Pods but runs nothing. A test that needs the workload plays the kubelet: when the
operator creates a Pod, the test starts the real process the Pod describes on a loopback address of
its own (127.0.0.2, 127.0.0.3, ...: all reach this machine) and reports the Pod Running and Ready
with that ``podIP`` through the status subresource, as a kubelet does::

    async def start(pod):                    # returns the pod's IP, or None to leave it Pending
        ip = kubelet.next_ip()
        procs[pod['metadata']['name']] = await start_model_server(host=ip, port=5000)
        return ip

    kubelet = Kubelet(cluster.emulator, start=start, stop=stop)
    async with kubelet:
        ...                                  # the operator's pods turn Running/Ready as they appear

or by hand: ``pod_running(cluster.emulator, 'mobilenet-pod0', ip='127.0.0.2')``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from tests.kube.emulator import KubeEmulator, Obj

NODE_NAME = 'emulated-node'
NODE_IP = '127.0.0.1'


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def _condition(kind: str, status: bool, now: str) -> dict[str, Any]:
    return {'type': kind, 'status': 'True' if status else 'False', 'lastProbeTime': None,
            'lastTransitionTime': now}


def running_status(pod: Obj, ip: str, *, ready: bool = True, host_ip: str = NODE_IP) -> Obj:
    """The status a kubelet reports for a pod whose containers started (and passed readiness if ``ready``)."""
    now = _now()
    containers = (pod.get('spec') or {}).get('containers') or []
    return {
        'phase': 'Running', 'podIP': ip, 'podIPs': [{'ip': ip}], 'hostIP': host_ip, 'hostIPs': [{'ip': host_ip}],
        'startTime': (pod.get('status') or {}).get('startTime') or now, 'qosClass': 'BestEffort',
        'conditions': [
            _condition('PodReadyToStartContainers', True, now), _condition('Initialized', True, now),
            _condition('Ready', ready, now), _condition('ContainersReady', ready, now),
            _condition('PodScheduled', True, now),
        ],
        'containerStatuses': [
            {'name': c['name'], 'image': c.get('image', ''), 'imageID': '', 'ready': ready, 'started': True,
             'restartCount': 0, 'state': {'running': {'startedAt': now}},
             'containerID': f'emulated://{pod["metadata"]["name"]}-{c["name"]}'}
            for c in containers
        ],
    }


def terminated_status(pod: Obj, *, exit_code: int = 0, reason: str | None = None) -> Obj:
    """The status of a pod whose containers all exited (Succeeded with 0, Failed otherwise)."""
    now = _now()
    status = dict(pod.get('status') or {})
    containers = (pod.get('spec') or {}).get('containers') or []
    status.update({
        'phase': 'Succeeded' if exit_code == 0 else 'Failed',
        'conditions': [_condition('Ready', False, now), _condition('ContainersReady', False, now),
                       _condition('PodScheduled', True, now)],
        'containerStatuses': [
            {'name': c['name'], 'image': c.get('image', ''), 'imageID': '', 'ready': False, 'started': False,
             'restartCount': 0, 'state': {'terminated': {
                 'exitCode': exit_code, 'reason': reason or ('Completed' if exit_code == 0 else 'Error'),
                 'startedAt': status.get('startTime') or now, 'finishedAt': now}}}
            for c in containers
        ],
    })
    return status


def pod_running(emulator: KubeEmulator, name: str, *, ip: str, namespace: str = 'default',
                ready: bool = True) -> Obj:
    """Report the pod Running (and Ready) with ``podIP=ip``, scheduled on the emulated node."""
    pod = emulator.get_object('pods', name, namespace)
    if pod is None:
        raise KeyError(f'no pod {namespace}/{name}')
    if not (pod.get('spec') or {}).get('nodeName'):
        pod = emulator.patch_object('pods', name, {'spec': {'nodeName': NODE_NAME}}, namespace)
    return emulator.patch_object('pods', name, {'status': running_status(pod, ip, ready=ready)}, namespace,
                                 subresource='status')


def pod_ready(emulator: KubeEmulator, name: str, ready: bool, *, namespace: str = 'default') -> Obj:
    """Flip a running pod's readiness (a failing or recovering readiness probe)."""
    pod = emulator.get_object('pods', name, namespace)
    if pod is None:
        raise KeyError(f'no pod {namespace}/{name}')
    return emulator.patch_object('pods', name, {'status': running_status(pod, pod['status']['podIP'], ready=ready)},
                                 namespace, subresource='status')


def pod_terminated(emulator: KubeEmulator, name: str, *, exit_code: int = 0, namespace: str = 'default') -> Obj:
    """Report the pod's containers exited: Succeeded (exit code 0) or Failed."""
    pod = emulator.get_object('pods', name, namespace)
    if pod is None:
        raise KeyError(f'no pod {namespace}/{name}')
    return emulator.patch_object('pods', name, {'status': terminated_status(pod, exit_code=exit_code)}, namespace,
                                 subresource='status')


def job_finished(emulator: KubeEmulator, name: str, *, succeeded: bool = True, namespace: str = 'default') -> Obj:
    """Play the Job controller: the Job is Complete (or Failed), as after its pod exited."""
    now = _now()
    job = emulator.get_object('jobs', name, namespace)
    if job is None:
        raise KeyError(f'no job {namespace}/{name}')
    kind = 'Complete' if succeeded else 'Failed'
    conditions = [_condition('SuccessCriteriaMet' if succeeded else 'FailureTarget', True, now),
                  _condition(kind, True, now)]
    status = {'conditions': conditions, 'startTime': (job.get('status') or {}).get('startTime') or now,
              'active': 0, 'ready': 0, 'succeeded' if succeeded else 'failed': 1}
    if succeeded:
        status['completionTime'] = now
    return emulator.patch_object('jobs', name, {'status': status}, namespace, subresource='status')


def job_started(emulator: KubeEmulator, name: str, *, namespace: str = 'default') -> Obj:
    """Play the Job controller: the Job has one active, ready pod."""
    return emulator.patch_object('jobs', name, {'status': {'startTime': _now(), 'active': 1, 'ready': 1}},
                                 namespace, subresource='status')


StartFn = Callable[[Obj], Awaitable[str | None]]
StopFn = Callable[[Obj], Awaitable[None]]


class Kubelet:
    """Starts every new pod (through ``start``) and reports it Running/Ready; ``stop`` when it is deleted.

    ``start(pod)`` returns the pod's IP (``next_ip()`` gives fresh loopback addresses) or ``None``
    to leave the pod Pending; without ``start``, pods just get the next IP. Pods of other namespaces
    than ``namespace`` (if given) or not matching ``accept`` are left alone.
    """

    def __init__(self, emulator: KubeEmulator, *, start: StartFn | None = None, stop: StopFn | None = None,
                 namespace: str | None = None, accept: Callable[[Obj], bool] = lambda pod: True,
                 first_ip: str = '127.0.0.2') -> None:
        self.emulator = emulator
        self.start = start
        self.stop = stop
        self.namespace = namespace
        self.accept = accept
        self._next_ip = ipaddress.IPv4Address(first_ip)
        self.started: dict[tuple[str, str], str] = {}  # (namespace, name) -> IP
        self._task: asyncio.Task[None] | None = None

    def next_ip(self) -> str:
        ip = str(self._next_ip)
        self._next_ip += 1
        return ip

    async def _handle_new(self, pod: Obj) -> None:
        meta = pod['metadata']
        ip = await self.start(pod) if self.start is not None else self.next_ip()
        if ip is not None and self.emulator.get_object('pods', meta['name'], meta['namespace']) is not None:
            self.started[meta['namespace'], meta['name']] = ip
            pod_running(self.emulator, meta['name'], ip=ip, namespace=meta['namespace'])

    async def run(self) -> None:
        since = self.emulator.resource_version
        for pod in self.emulator.list_objects('pods', self.namespace):
            if self.accept(pod) and not (pod.get('status') or {}).get('podIP'):
                await self._handle_new(pod)
        async for event in self.emulator.events('pods', since=since):
            pod = event.object
            meta = pod['metadata']
            if (self.namespace is not None and meta.get('namespace') != self.namespace) or not self.accept(pod):
                continue
            if event.type == 'ADDED':
                await self._handle_new(pod)
            elif event.type == 'DELETED':
                was_started = self.started.pop((meta['namespace'], meta['name']), None) is not None
                if was_started and self.stop is not None:
                    await self.stop(pod)

    async def __aenter__(self) -> Kubelet:
        self._task = asyncio.create_task(self.run(), name='emulated kubelet')
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task  # re-raises what made the kubelet fail, if anything
