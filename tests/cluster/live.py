"""The real control plane of ``make kube-up`` as the cluster tier sees it.

- :class:`ControlPlane`: started (idempotently) by ``hack/kube-up.sh``; the admin kubeconfig, the CA and
  the admin client certificate under ``.kube-local/``; stopped at the end of the session if the session
  started it.
- :class:`LiveCluster`: the same interface as the emulated tier's :class:`tests.kube.cluster.Cluster`
  (``get``/``list``/``create``/``patch``/``delete`` on the store, ``kubectl``/``kubectl_stream``), here
  over HTTPS as the cluster admin, so the test kubelet of ``tests/e2e/operator_harness.py`` plays the
  node for both tiers.
- :class:`OperatorProcess`: ``kinfer operator`` as its own process, authenticated as the chart's
  ServiceAccount with a token from the TokenRequest API: every call it makes is authorized by the
  chart's RBAC, and a test can SIGKILL it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
import yaml

from tests.kube.kubectl import Kubectl, KubectlResult, KubectlStream

if TYPE_CHECKING:
    from tests.e2e.operator_harness import Kubelet

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / ".kube-local"
BIN = LOCAL / "bin"
KUBECTL = str(BIN / "kubectl")
HELM = str(BIN / "helm")
KINFER = str(Path(sys.executable).with_name("kinfer"))
NODE = "kinfer-local"
RELEASE = "kinfer"
OPERATOR_NAMESPACE = "kinfer-system"
OPERATOR_ACCOUNT = "kinfer"  # the chart's ServiceAccount for release "kinfer"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"

#: Where each resource lives: (API prefix, namespaced).
RESOURCES: dict[str, tuple[str, bool]] = {
    "pods": ("/api/v1", True),
    "services": ("/api/v1", True),
    "configmaps": ("/api/v1", True),
    "secrets": ("/api/v1", True),
    "events": ("/api/v1", True),
    "serviceaccounts": ("/api/v1", True),
    "endpoints": ("/api/v1", True),
    "leases": ("/apis/coordination.k8s.io/v1", True),
    "networkpolicies": ("/apis/networking.k8s.io/v1", True),
    "namespaces": ("/api/v1", False),
    "nodes": ("/api/v1", False),
    "jobs": ("/apis/batch/v1", True),
    "deployments": ("/apis/apps/v1", True),
    "inferenceservices": ("/apis/kinfer.dev/v1alpha1", True),
    "loadexperiments": ("/apis/kinfer.dev/v1alpha1", True),
    "sweeps": ("/apis/kinfer.dev/v1alpha1", True),
}
ALIASES = {"lexp": "loadexperiments", "kisvc": "inferenceservices", "sweep": "sweeps"}


class ApiError(AssertionError):
    """The API server refused a call the test made."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status


@dataclass
class ControlPlane:
    """``make kube-up``'s control plane: its URL and credentials."""

    local: Path = LOCAL
    started_here: bool = False

    @property
    def kubeconfig(self) -> Path:
        return self.local / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.local / "pki"

    @property
    def audit_log(self) -> Path:
        return self.local / "logs" / "audit.log"

    def server(self) -> str:
        config = yaml.safe_load(self.kubeconfig.read_text())
        return str(config["clusters"][0]["cluster"]["server"])

    def running(self) -> bool:
        pid = self.local / "run" / "kube-apiserver.pid"
        try:
            os.kill(int(pid.read_text()), 0)
        except (OSError, ValueError):
            return False
        return True

    @classmethod
    def up(cls) -> ControlPlane:
        """Start it unless it runs (building the binaries on first use)."""
        plane = cls()
        was_running = plane.running()
        result = subprocess.run([str(ROOT / "hack" / "kube-up.sh")], capture_output=True, text=True, timeout=3600)
        if result.returncode != 0:
            raise RuntimeError(f"hack/kube-up.sh failed ({result.returncode}):\n{result.stderr[-4000:]}")
        plane.started_here = not was_running
        return plane

    def down(self) -> None:
        subprocess.run([str(ROOT / "hack" / "kube-down.sh")], capture_output=True, timeout=120, check=True)

    def session(self) -> requests.Session:
        """An HTTPS session as the cluster admin."""
        session = requests.Session()
        session.cert = (str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        session.verify = str(self.pki / "ca.crt")
        return session

    def env(self) -> dict[str, str]:
        """The environment of a subprocess acting as the admin, with the built kubectl and helm first on PATH."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": f"{BIN}:{os.environ['PATH']}"}

    def helm(self, *args: str) -> str:
        result = subprocess.run([HELM, *args], capture_output=True, text=True, env=self.env(), timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)}: {result.stderr}")
        return result.stdout

    def install_chart(self, *values: str, release: str = RELEASE) -> None:
        """The chart with real Helm (CRDs, RBAC, ServiceAccount), without an in-cluster operator pod."""
        sets = [f"--set={v}" for v in ("replicas=0", *values)]
        self.helm("upgrade", "--install", release, str(ROOT / "charts" / "kinfer"), "--namespace", OPERATOR_NAMESPACE,
                  "--create-namespace", "--wait", "--timeout=2m", "--force-conflicts", *sets)

    def service_account_kubeconfig(self, path: Path, account: str = OPERATOR_ACCOUNT,
                                   namespace: str = OPERATOR_NAMESPACE) -> Path:
        """A kubeconfig with a TokenRequest token of the ServiceAccount (what an in-cluster pod gets)."""
        token = subprocess.run(
            [KUBECTL, "create", "token", account, "-n", namespace, "--duration=3h"],
            capture_output=True, text=True, env=self.env(), check=True, timeout=30).stdout.strip()
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "local", "cluster": {  # the CA inline: the file works in a container too
                "server": self.server(),
                "certificate-authority-data": base64.b64encode((self.pki / "ca.crt").read_bytes()).decode()}}],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": account}}],
            "current-context": "local",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path


def _path(resource: str, name: str | None, namespace: str | None, subresource: str | None = None) -> str:
    resource = ALIASES.get(resource, resource)
    prefix, namespaced = RESOURCES[resource]
    out = prefix + (f"/namespaces/{namespace}" if namespaced and namespace else "") + f"/{resource}"
    if name is not None:
        out += f"/{name}"
    if subresource:
        out += f"/{subresource}"
    return out


@dataclass
class LiveCluster:
    """The store and kubectl of the real control plane, with the emulated tier's interface."""

    plane: ControlPlane
    kubectl_runner: Kubectl
    namespace: str = "default"
    http: requests.Session = field(init=False)

    def __post_init__(self) -> None:
        self.http = self.plane.session()
        self.url = self.plane.server()
        self.kubeconfig = self.plane.kubeconfig

    def _call(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
              params: dict[str, str] | None = None) -> Any:
        # verify= per request: requests lets $REQUESTS_CA_BUNDLE override a session's CA otherwise.
        for _ in range(20):  # as client-go does: 429 (a cache still starting) is retried after Retry-After
            response = self.http.request(method, self.url + path, params=params, timeout=30,
                                         verify=self.http.verify, data=None if body is None else json.dumps(body),
                                         headers={"Content-Type": content_type, "Accept": "application/json"})
            if response.status_code != 429:
                break
            time.sleep(min(float(response.headers.get("Retry-After") or 1), 5))
        if response.status_code == 404 and method == "GET":
            return None
        if response.status_code >= 400:
            raise ApiError(response.status_code, response.text)
        return response.json()

    async def kubectl(self, *args: str, input: str | bytes | None = None, check: bool = True,
                      timeout_s: float = 60.0) -> KubectlResult:
        return await self.kubectl_runner(*args, input=input, check=check, timeout_s=timeout_s)

    def kubectl_stream(self, *args: str) -> contextlib.AbstractAsyncContextManager[KubectlStream]:
        return self.kubectl_runner.stream(*args)

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._call("GET", _path(resource, name, namespace or self.namespace))
        return result

    def list(self, resource: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        result = self._call("GET", _path(resource, None, namespace or self.namespace), params=params)
        return list((result or {}).get("items") or [])

    def create(self, resource: str, body: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", _path(resource, None, namespace or self.namespace), body)
        return result

    def patch(self, resource: str, name: str, patch: Any, namespace: str | None = None, *,
              subresource: str | None = None) -> dict[str, Any]:
        kind = "application/json-patch+json" if isinstance(patch, list) else "application/merge-patch+json"
        result: dict[str, Any] = self._call("PATCH", _path(resource, name, namespace or self.namespace, subresource),
                                            patch, content_type=kind)
        return result

    def delete(self, resource: str, name: str, namespace: str | None = None, *,
               grace_period_s: int | None = None) -> dict[str, Any] | None:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if grace_period_s is not None:
            body["gracePeriodSeconds"] = grace_period_s
        try:
            result: dict[str, Any] | None = self._call("DELETE", _path(resource, name, namespace or self.namespace),
                                                       body)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return result


def restricted_namespace(cluster: LiveCluster, prefix: str = "kinfer-t") -> str:
    """A new namespace enforcing the ``restricted`` Pod Security level (and warning and auditing it)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
    labels.update({f"pod-security.kubernetes.io/{mode}-version": "latest" for mode in ("enforce", "warn", "audit")})
    cluster.create("namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                  "metadata": {"name": name, "labels": labels}}, namespace=None)
    return name


@dataclass
class OperatorProcess:
    """``kinfer operator --namespace NS`` as a process, with the chart's ServiceAccount identity."""

    kubeconfig: Path
    namespace: str
    log: Path
    metrics_port: int
    env: dict[str, str] = field(default_factory=dict)
    clusterwide: bool = True
    """Watch every namespace (the chart's default, with its ClusterRoles), else only the test's."""
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0

    async def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KINFER_OPERATOR_METRICS_HOST": "127.0.0.1",
               "KINFER_OPERATOR_METRICS_PORT": str(self.metrics_port),
               # as in the chart: leader election through a Lease in the release's namespace
               "KINFER_OPERATOR_LEASE_NAMESPACE": OPERATOR_NAMESPACE, "KINFER_OPERATOR_LEASE_NAME": RELEASE,
               "KINFER_OPERATOR_LEASE_S": "6", "KINFER_OPERATOR_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
               # the kubernetes client writes the kubeconfig's CA to a temp file and removes it at exit,
               # which a SIGKILLed operator never reaches: keep such files in the test's directory
               "TMPDIR": str(self.log.parent),
               **self.env}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.starts += 1
        out = self.log.open("ab")
        out.write(f"--- start {self.starts} ---\n".encode())
        self.proc = await asyncio.create_subprocess_exec(
            KINFER, "operator", *(["--all-namespaces"] if self.clusterwide else ["--namespace", self.namespace]),
            stdout=out, stderr=asyncio.subprocess.STDOUT,
            env=env, start_new_session=True)
        out.close()

    async def healthy(self) -> bool:
        def probe() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        return await asyncio.to_thread(probe)

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.asynccontextmanager
async def running_operator(operator: OperatorProcess, timeout_s: float = 30.0) -> AsyncIterator[OperatorProcess]:
    """The operator process until the block exits (SIGTERM, then SIGKILL)."""
    await operator.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not await operator.healthy():
            assert operator.proc is not None
            if operator.proc.returncode is not None or loop.time() > deadline:
                raise AssertionError(f"the operator did not become healthy:\n{operator.tail()}")
            await asyncio.sleep(0.2)
        yield operator
    finally:
        await operator.kill(signal.SIGTERM)


def audit_events(plane: ControlPlane, user: str, since: str | None = None) -> Iterator[dict[str, Any]]:
    """Audit events (stage ResponseComplete) of one user, optionally after an RFC 3339 time."""
    if not plane.audit_log.exists():
        return
    with plane.audit_log.open() as lines:
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("stage") != "ResponseComplete" or (event.get("user") or {}).get("username") != user:
                continue
            if since is not None and str(event.get("requestReceivedTimestamp", "")) < since:
                continue
            yield event


def cluster_state(live: LiveCluster, operator: OperatorProcess | None = None, kubelet: Kubelet | None = None) -> str:
    """What the test's namespace looks like now, for a failed wait's message: kinfer's objects and their
    conditions, Deployments, Jobs, pods (phase, node, readiness), the last events, and the tails of the
    operator's and the test kubelet's process logs. Each part that cannot be read says why instead."""
    out: list[str] = [f"--- cluster state of namespace {live.namespace} ---"]

    def section(title: str, lines: Callable[[], Iterator[str]]) -> None:
        out.append(f"[{title}]")
        try:
            out.extend(f"  {line}" for line in lines())
        except Exception as exc:  # a diagnostic must never hide the failure it explains
            out.append(f"  (unreadable: {exc})")

    def kinfer_objects() -> Iterator[str]:
        for resource in ("inferenceservices", "loadexperiments", "sweeps"):
            for obj in live.list(resource):
                status = obj.get("status") or {}
                conditions = [(c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or []]
                yield (f"{resource}/{obj['metadata']['name']}: phase={status.get('phase')} conditions={conditions} "
                       f"live={json.dumps(status.get('live'))[:200]}")

    def workloads() -> Iterator[str]:
        for resource in ("deployments", "jobs"):
            for obj in live.list(resource):
                yield f"{resource}/{obj['metadata']['name']}: {json.dumps(obj.get('status') or {})[:300]}"
        for pod in live.list("pods"):
            status = pod.get("status") or {}
            ready = [c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"]
            yield (f"pod/{pod['metadata']['name']}: phase={status.get('phase')} node={pod['spec'].get('nodeName')} "
                   f"ip={status.get('podIP')} ready={ready}")

    def events() -> Iterator[str]:
        listed = sorted(live.list("events"), key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        for event in listed[-25:]:
            involved = event.get("involvedObject") or {}
            yield (f"{event.get('lastTimestamp') or event.get('eventTime')} {event.get('type')} "
                   f"{involved.get('kind')}/{involved.get('name')} {event.get('reason')}: {event.get('message')}")

    section("kinfer objects", kinfer_objects)
    section("workloads", workloads)
    section("events", events)
    if operator is not None:
        section("operator log", lambda: iter(operator.tail(60).splitlines()))
    if kubelet is not None:
        section("test kubelet's processes", lambda: iter(kubelet.log_tail().splitlines()))
    return "\n".join(out)
