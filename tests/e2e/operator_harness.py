"""Run the kinfer operator in-process against the emulated cluster, and play the kubelet for its pods.

:func:`kinfer_operator` starts exactly what ``kinfer operator`` runs (the same registry and memo) in the
test's event loop. :class:`Kubelet` plays the node agents the emulator lacks:

- the Job controller: a Job gets ``completions`` pods from its template (indexed), and its status
  counts and ``Complete``/``Failed`` condition when they finish;
- the kubelet: a new pod gets the real process its container describes, started from this repo's
  ``.venv/bin/kinfer`` on its own loopback address (127.x.y.N), which becomes the pod's ``podIP`` and
  ``hostIP``; the readiness probe in the pod spec is executed against it; a pod that disappears has
  its process killed; a process that exits moves its pod to Succeeded/Failed;
- cluster networking: there is no DNS or kube-proxy, so a Service URL in a pod's arguments
  (``http://<svc>.<ns>.svc.cluster.local:<port>``) is rewritten to a ready pod behind that Service,
  and files of ConfigMap volumes are written to a directory whose path replaces the mount path.

The model server runs with the ``null`` backend (one worker): the pod's model file, dataset and GPU
flags describe a node that this machine is not.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import random
import re
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from kinfer.controller.kube import Kube
from kinfer.controller.operator import REGISTRY, memo_for
from kinfer.controller.settings import Settings
from tests.kube.cluster import Cluster
from tests.kube.operator import running_operator, test_settings

ROOT = Path(__file__).resolve().parents[2]
KINFER = str(Path(sys.executable).with_name("kinfer"))
log = logging.getLogger("tests.kubelet")
SERVICE_URL = re.compile(r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)")
#: Server flags that name things on the seed's node (model file, dataset, GPU): dropped for null runs.
DROP_SERVER_FLAGS = {"--model", "--dataset", "--memory-fraction", "--known-model", "--format", "--workers", "--host"}


@contextlib.asynccontextmanager
async def kinfer_operator(settings: Settings, *, namespaces: tuple[str, ...] = ("default",)) -> AsyncIterator[Kube]:
    """The operator running until the block exits; yields its API client (tests may use it too)."""
    kube = Kube.from_environment()
    async with running_operator(REGISTRY, namespaces=namespaces, settings=test_settings(),
                                memo=memo_for(settings, kube)):
        yield kube


class Addresses:
    """Distinct loopback addresses in a random /24 of 127/8 (parallel test runs do not collide)."""

    def __init__(self) -> None:
        self.prefix = f"127.{random.randint(20, 250)}.{random.randint(1, 250)}"
        self.next = 2

    def allocate(self) -> str:
        ip = f"{self.prefix}.{self.next}"
        self.next += 1
        return ip


@dataclass
class Running:
    """One pod's process."""

    uid: str
    name: str
    ip: str
    proc: asyncio.subprocess.Process
    log: Path
    ready_url: str | None
    ready: bool = False
    finished: bool = False


@dataclass
class Kubelet:
    """Plays the Job controller, the kubelet and cluster DNS for one namespace of a cluster.

    On the emulated cluster it plays the Job controller too and starts every pod; on the real control
    plane (``tests/cluster``) the real Job controller and scheduler work, so it starts only pods bound to
    its node, and finishes the deletion of pods the API server marked for deletion (grace period 0),
    as a kubelet does once their containers stopped.
    """

    cluster: Any  # tests.kube.cluster.Cluster or tests.cluster.live.LiveCluster (the same interface)
    workdir: Path
    namespace: str = "default"
    run_processes: bool = True
    """False: mark pods Running and Ready at once without starting anything (cheap lifecycle tests)."""
    play_jobs: bool = True
    """Play the Job controller (the emulator has none)."""
    node_name: str | None = None
    """Start only pods the scheduler bound to this node, and finish their deletions."""
    hold: Callable[[dict[str, Any]], bool] = lambda pod: False
    """Pods for which this is true stay Pending (an image that does not pull, a node without room)."""
    startup_delay_s: Callable[[dict[str, Any]], float] = lambda pod: 0.0
    """Seconds a pod's container takes before its process starts (image pull, interpreter start on a
    slow node): the pod is Running, not Ready, meanwhile, and nothing listens on its address."""
    server_extra_args: tuple[str, ...] = ()
    addresses: Addresses = field(default_factory=Addresses)
    pods: dict[str, Running] = field(default_factory=dict)
    fake: set[str] = field(default_factory=set)
    jobs: set[str] = field(default_factory=set)
    started: list[str] = field(default_factory=list)
    """Names of the pods a process was started for, in order."""
    _task: asyncio.Task[None] | None = None
    _session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Kubelet:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0))
        self._task = asyncio.create_task(self._loop(), name="test kubelet")
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for running in self.pods.values():
            await _kill(running.proc)
        if self._session is not None:
            await self._session.close()

    def running(self, prefix: str) -> list[Running]:
        """Live processes of pods whose name starts with ``prefix``."""
        return [r for r in self.pods.values() if r.name.startswith(prefix) and not r.finished]

    def log_tail(self) -> str:
        """The last lines of every process log (for failure messages)."""
        out = []
        for r in self.pods.values():
            text = r.log.read_text(errors="replace") if r.log.exists() else ""
            out.append(f"--- {r.name} ({r.ip}) ---\n" + "\n".join(text.splitlines()[-15:]))
        return "\n".join(out)

    async def _loop(self) -> None:
        while True:
            try:
                if self.play_jobs:
                    self._sync_jobs()
                await self._sync_pods()
            except Exception:  # a test helper must keep going; the test's assertions will tell
                log.exception("test kubelet round failed")
            await asyncio.sleep(0.1)

    # --- the Job controller -----------------------------------------------------------------------

    def _sync_jobs(self) -> None:
        for job in self.cluster.list("jobs", self.namespace):
            meta, spec = job["metadata"], job["spec"]
            if meta["uid"] not in self.jobs:
                self.jobs.add(meta["uid"])
                for index in range(spec.get("completions") or 1):
                    self._create_job_pod(job, index)
            self._update_job_status(job)

    def _create_job_pod(self, job: dict[str, Any], index: int) -> None:
        template = job["spec"]["template"]
        name = job["metadata"]["name"]
        labels = {**(template.get("metadata") or {}).get("labels", {}), "job-name": name,
                  "batch.kubernetes.io/job-completion-index": str(index)}
        suffix = "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        self.cluster.create("pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-{index}-{suffix}", "namespace": self.namespace, "labels": labels,
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                                              "uid": job["metadata"]["uid"], "controller": True}]},
            "spec": template["spec"],
        })

    def _update_job_status(self, job: dict[str, Any]) -> None:
        name, uid = job["metadata"]["name"], job["metadata"]["uid"]
        pods = [p for p in self.cluster.list("pods", self.namespace)
                if any(o.get("uid") == uid for o in p["metadata"].get("ownerReferences") or [])]
        phases = [(p.get("status") or {}).get("phase") for p in pods]
        status: dict[str, Any] = {
            "active": sum(1 for ph in phases if ph in (None, "Pending", "Running")),
            "succeeded": phases.count("Succeeded"),
            "failed": phases.count("Failed"),
        }
        completions = job["spec"].get("completions") or 1
        conditions = []
        if status["succeeded"] >= completions:
            conditions.append({"type": "Complete", "status": "True", "reason": "Completed"})
        elif status["failed"] > job["spec"].get("backoffLimit", 6):
            conditions.append({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                               "message": "Job has reached the specified backoff limit"})
        if conditions:
            status["conditions"] = conditions
        current = job.get("status") or {}
        if any(current.get(k) != v for k, v in status.items()):
            self.cluster.patch("jobs", name, {"status": status}, self.namespace, subresource="status")

    # --- the kubelet ------------------------------------------------------------------------------

    async def _sync_pods(self) -> None:
        present = {}
        for pod in self.cluster.list("pods", self.namespace):
            uid = pod["metadata"]["uid"]
            present[uid] = pod
            if self.node_name is not None and (pod.get("spec") or {}).get("nodeName") != self.node_name:
                continue  # not scheduled (yet), or not this node's
            if pod["metadata"].get("deletionTimestamp"):
                if self.node_name is not None:
                    await self._finish_deletion(pod)
                continue
            if uid not in self.pods and uid not in self.fake and not self.hold(pod):
                try:
                    await self._start(pod)
                except AssertionError as exc:
                    # Like a kubelet whose pod cannot start yet (its Service has no ready endpoint): retry
                    # next round, and let the other pods of this round start meanwhile.
                    log.info("pod %s not started yet: %s", pod["metadata"]["name"], exc)
        for uid, running in list(self.pods.items()):
            pod = present.get(uid)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                await _kill(running.proc)
                del self.pods[uid]
                continue
            if running.finished:
                continue
            if running.proc.returncode is not None:
                running.finished = True
                code = running.proc.returncode
                exit_code = 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a kubelet says
                self._set_status(running.name, "Succeeded" if code == 0 else "Failed", running.ip, ready=False,
                                 exit_code=exit_code, container=pod["spec"]["containers"][0])
            elif not running.ready and await self._probe(running):
                running.ready = True
                self._set_status(running.name, "Running", running.ip, ready=True)

    async def _finish_deletion(self, pod: dict[str, Any]) -> None:
        """A kubelet stops the containers, then deletes the pod for good (grace period 0)."""
        running = self.pods.pop(pod["metadata"]["uid"], None)
        if running is not None:
            await _kill(running.proc)
        self.fake.discard(pod["metadata"]["uid"])
        self.cluster.delete("pods", pod["metadata"]["name"], self.namespace, grace_period_s=0)

    def _set_status(self, name: str, phase: str, ip: str, *, ready: bool, exit_code: int | None = None,
                    container: dict[str, Any] | None = None) -> None:
        now = "2026-01-01T00:00:00Z"
        status: dict[str, Any] = {
            "phase": phase, "podIP": ip, "hostIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now},
                           {"type": "ContainersReady", "status": "True" if ready else "False",
                            "lastTransitionTime": now}],
        }
        if exit_code is not None and container is not None:
            status["containerStatuses"] = [{
                "name": container["name"], "image": container.get("image", ""), "imageID": "", "ready": False,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                                         "startedAt": now, "finishedAt": now}}}]
        self.cluster.patch("pods", name, {"status": status}, self.namespace, subresource="status")

    async def _probe(self, running: Running) -> bool:
        if running.ready_url is None:
            return True
        assert self._session is not None
        try:
            async with self._session.get(running.ready_url) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _start(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        if not self.run_processes:
            self.fake.add(pod["metadata"]["uid"])
            self._set_status(name, "Running", self.addresses.allocate(), ready=True)
            return
        container = pod["spec"]["containers"][0]
        podir = self.workdir / "pods" / name
        podir.mkdir(parents=True, exist_ok=True)
        args = self._mount(pod, list(container.get("args") or []), podir)
        args = self._resolve_services(args)  # may raise: then no address is taken, the next round retries
        ip = self.addresses.allocate()
        if args and args[0] == "serve":
            args = self._server_args(args, ip)
        elif args and args[0] == "loadgen":
            args += ["--control-host", ip]
        env = {**os.environ, **{e["name"]: self._env_value(e) for e in container.get("env") or []}}
        env.pop("CUDA_VISIBLE_DEVICES", None)  # no GPU here; the pod spec assertion covers it
        logfile = podir / "log.txt"
        command = [KINFER, *args]
        if (delay := self.startup_delay_s(pod)) > 0:  # the same pid: sh execs kinfer after the sleep
            command = ["/bin/sh", "-c", 'sleep "$0"; exec "$@"', str(delay), *command]
        with logfile.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *command, stdout=out, stderr=asyncio.subprocess.STDOUT, env=env, cwd=podir)
        probe = container.get("readinessProbe", {}).get("httpGet")
        ready_url = None
        if probe:
            port = probe["port"]
            if isinstance(port, str):
                port = next(p["containerPort"] for p in container.get("ports", []) if p.get("name") == port)
            ready_url = f"http://{ip}:{port}{probe['path']}"
        self.pods[pod["metadata"]["uid"]] = Running(pod["metadata"]["uid"], name, ip, proc, logfile, ready_url)
        self.started.append(name)
        self._set_status(name, "Running", ip, ready=False)

    def _env_value(self, var: dict[str, Any]) -> str:
        """A container variable's value: literal, or from a Secret's key (``valueFrom.secretKeyRef``)."""
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            return str(var.get("value", ""))
        secret = self.cluster.get("secrets", ref["name"], self.namespace)
        assert secret is not None, f"no Secret {ref['name']} for {var['name']}"
        if ref["key"] in (secret.get("data") or {}):
            return base64.b64decode(secret["data"][ref["key"]]).decode()
        return str((secret.get("stringData") or {})[ref["key"]])

    def _server_args(self, args: list[str], ip: str) -> list[str]:
        out, skip = [], False
        for arg in args:
            if skip:
                skip = False
                continue
            if arg in DROP_SERVER_FLAGS:
                skip = True
                continue
            out.append(arg)
        return [*out, "--format", "null", "--workers", "1", "--host", ip, *self.server_extra_args]

    def _mount(self, pod: dict[str, Any], args: list[str], podir: Path) -> list[str]:
        """Write ConfigMap volumes to files and emptyDirs to dirs; rewrite their mount paths in args."""
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        container = pod["spec"]["containers"][0]
        mapping: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"], {})
            local = podir / "volumes" / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                cm = self.cluster.get("configmaps", volume["configMap"]["name"], self.namespace)
                for key, value in ((cm or {}).get("data") or {}).items():
                    (local / key).write_text(value)
            mapping[mount["mountPath"]] = str(local)
        out = []
        for arg in args:
            for path, local in mapping.items():
                if arg == path or arg.startswith(path.rstrip("/") + "/"):
                    arg = local + arg[len(path.rstrip("/")):]
            out.append(arg)
        return out

    def _resolve_services(self, args: list[str]) -> list[str]:
        """Cluster DNS: a Service URL becomes the address of a ready pod it selects."""
        def replace(match: re.Match[str]) -> str:
            svc_name, namespace, port = match.group(1), match.group(2), int(match.group(3))
            service = self.cluster.get("services", svc_name, namespace)
            assert service is not None, f"no Service {svc_name} in {namespace}"
            selector = service["spec"]["selector"]
            for pod in self.cluster.list("pods", namespace):
                labels = pod["metadata"].get("labels") or {}
                status = pod.get("status") or {}
                ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                            for c in status.get("conditions") or [])
                if all(labels.get(k) == v for k, v in selector.items()) and ready:
                    return f"http://{status['podIP']}:{port}"
            raise AssertionError(f"no ready pod behind Service {svc_name}")
        return [SERVICE_URL.sub(replace, arg) for arg in args]


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def install_crds(cluster: Cluster) -> None:
    """The generated CRDs, applied with the real kubectl."""
    await cluster.kubectl("apply", "--validate=false", "-f", str(ROOT / "crds"))
    await cluster.kubectl("wait", "--for=condition=Established", "--timeout=10s",
                          "crd/inferenceservices.kinfer.dev", "crd/loadexperiments.kinfer.dev", "crd/sweeps.kinfer.dev")


def status_of(cluster: Cluster, resource: str, name: str) -> dict[str, Any]:
    """An object's status (empty when absent)."""
    obj = cluster.get(resource, name)
    return (obj or {}).get("status") or {}


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    """One condition of a status (empty when absent)."""
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def dump(obj: Any) -> str:
    """JSON for assertion messages."""
    return json.dumps(obj, indent=1, default=str)[:4000]


Check = Callable[[], Any]
