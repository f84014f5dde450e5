"""Turn validated manifests into a plan of local processes — pure, so it is tested without processes.

Each InferenceService becomes ``replicas`` ``kinfer serve`` processes on loopback ports (plus a random
1-of-n balancer when there are several, as the seeds' load balancing did); each LoadExperiment becomes
one ``kinfer loadgen`` process whose control API doubles as the dashboard. A server's container paths
(model, dataset) that lie under one of its ``volumes`` are read from the volume's ``hostPath`` on this
machine, as the pod would see them. Fields that only mean something in a cluster are listed as
ignored, never silently dropped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kinfer.api import InferenceService, KinferResource, LoadExperiment, ManifestError
from kinfer.api.commands import GeneratorPlacement, loadgen_args, serve_args
from kinfer.local.limits import ServerLimits, pinned_argv, server_limits, usable_cores

LOOPBACK = "127.0.0.1"


def kinfer_command(*args: str) -> list[str]:
    """argv running the ``kinfer`` CLI of this very interpreter (works without the script on PATH)."""
    return [sys.executable, "-m", "kinfer.cli", *args]


@dataclass(frozen=True)
class ServerPlan:
    """The local processes of one InferenceService."""

    name: str
    replica_ports: tuple[int, ...]
    argv: tuple[tuple[str, ...], ...]
    env: dict[str, str]
    balancer_port: int | None
    ignored: tuple[str, ...]
    #: Per-replica CPU cores and GPU devices (:mod:`kinfer.local.limits`).
    limits: ServerLimits | None = None

    def env_for(self, index: int) -> dict[str, str]:
        """The environment of replica ``index``: ``env`` with its own ``CUDA_VISIBLE_DEVICES``."""
        devices = self.limits.replicas[index].gpu_devices if self.limits else None
        return self.env if devices is None else {**self.env, "CUDA_VISIBLE_DEVICES": devices}

    @property
    def url(self) -> str:
        """Where clients send requests: the balancer, or the only replica."""
        port = self.balancer_port if self.balancer_port is not None else self.replica_ports[0]
        return f"http://{LOOPBACK}:{port}"

    def replica_url(self, index: int) -> str:
        """Direct URL of one replica (metrics, health)."""
        return f"http://{LOOPBACK}:{self.replica_ports[index]}"


@dataclass(frozen=True)
class ExperimentPlan:
    """The local generator of one LoadExperiment."""

    name: str
    resource: LoadExperiment
    target_service: str | None
    url: str
    control_port: int
    results_dir: Path
    schedule: dict[str, Any]
    argv: tuple[str, ...]
    ignored: tuple[str, ...]

    @property
    def control_url(self) -> str:
        """The generator's control API and dashboard."""
        return f"http://{LOOPBACK}:{self.control_port}"


@dataclass(frozen=True)
class Plan:
    """Everything ``kinfer run`` will start."""

    servers: tuple[ServerPlan, ...]
    experiments: tuple[ExperimentPlan, ...]
    notes: tuple[str, ...] = field(default=())


def _resolve(path: str, base: Path) -> str:
    p = Path(path)
    return str(p if p.is_absolute() else (base / p).resolve())


@dataclass(frozen=True)
class HostPath:
    """Where a server's container path is read from on this machine, and through which volume."""

    path: str
    volume: str | None = None
    host_dir: str | None = None


def host_path(svc: InferenceService, path: str, base: Path) -> HostPath:
    """A container path of ``svc`` on this machine: under a volume's ``mountPath`` it is read from the
    volume's ``hostPath`` (the longest mount wins); otherwise relative paths resolve from ``base``."""
    mounts = sorted(svc.spec.volumes or [], key=lambda v: len(v.mount_path), reverse=True)
    for volume in mounts:
        mount = volume.mount_path.rstrip("/") or "/"
        if path == mount or path.startswith(mount.rstrip("/") + "/"):
            rest = path[len(mount) :].lstrip("/")
            host = str(Path(volume.host_path) / rest) if rest else volume.host_path
            return HostPath(host, volume.name, volume.host_path)
    return HostPath(_resolve(path, base))


def missing_host_paths(svc: InferenceService, base: Path) -> list[str]:
    """``svc``'s model and dataset paths that do not exist here, each as ``HOST (field [via volume])``."""
    fields = [("spec.model.path", svc.spec.model.path), ("spec.dataset", svc.spec.dataset)]
    out = []
    for field_name, path in fields:
        if not path:
            continue
        where = host_path(svc, path, base)
        if not Path(where.path).exists():
            via = f" via volume {where.volume} hostPath {where.host_dir}" if where.volume else ""
            out.append(f"{where.path} ({field_name} {path}{via})")
    return out


def ignored_server_fields(svc: InferenceService) -> list[str]:
    """Cluster-only settings of an InferenceService that local mode cannot honour."""
    spec, out = svc.spec, []
    if spec.node_name:
        out.append(f"nodeName {spec.node_name!r}")
    if spec.node_selector:
        out.append("nodeSelector")
    if spec.service and spec.service.node_port:
        out.append(f"service.nodePort {spec.service.node_port}")
    if spec.volumes:
        used = {h.volume for p in (spec.model.path, spec.dataset) if p and (h := host_path(svc, p, Path("/"))).volume}
        unused = [v.name for v in spec.volumes if v.name not in used]
        if unused:
            out.append("volumes (only model and dataset paths are read from hostPath): " + ", ".join(unused))
    if spec.resources:
        limits = spec.resources.limits
        others = ["requests"] if spec.resources.requests else []
        others += ["limits.memory"] if limits and limits.memory is not None else []
        if others:
            out.append("resources." + ", resources.".join(others) + " (only limits.cpu is enforced)")
    if spec.gpu and spec.gpu.count:
        out.append(f"gpu.count {spec.gpu.count} (use gpu.devices to pin locally)")
    return out


def server_argv(svc: InferenceService, port: int, base: Path) -> list[str]:
    """``kinfer serve`` for one replica of ``svc`` on a loopback ``port`` (relative paths from ``base``)."""
    return kinfer_command(*serve_args(svc, LOOPBACK, port, lambda p: host_path(svc, p, base).path))


def schedule_document(exp: LoadExperiment) -> dict[str, Any]:
    """The ``--schedule`` file for the generator: the spec's stages and loop flag."""
    return {"stages": [s.wire() for s in exp.spec.schedule], "loop": exp.spec.loop}


def loadgen_argv(
    exp: LoadExperiment, url: str, control_port: int, results: Path, base: Path, server_metrics: Sequence[str] = ()
) -> list[str]:
    """``kinfer loadgen`` for ``exp`` against the base ``url``, results and schedule in ``results``;
    ``server_metrics``: the target's replicas' ``/metrics``, scraped per record for the server's CPU,
    memory and GPU (the same path a cluster run takes)."""
    where = GeneratorPlacement(
        schedule_file=str(results / "schedule.json"),
        output=str(results),
        control_port=control_port,
        linger_s=1,
        control_host=LOOPBACK,
        path=lambda p: _resolve(p, base),
    )
    argv = kinfer_command(*loadgen_args(exp, url.rstrip("/") + exp.spec.target.path, where))
    if server_metrics:
        argv += ["--server-metrics", ",".join(server_metrics)]
    return argv


def ignored_experiment_fields(exp: LoadExperiment) -> list[str]:
    """Cluster-only settings of a LoadExperiment that local mode cannot honour."""
    spec, out = exp.spec, []
    if spec.parallelism > 1:
        out.append(f"parallelism {spec.parallelism} (one local generator)")
    if spec.node_name or spec.node_selector:
        out.append("nodeName/nodeSelector")
    if spec.resources:
        out.append("resources")
    return out


def build_plan(
    resources: Sequence[KinferResource],
    ports: Iterator[int],
    results_for: Callable[[str], Path],
    dashboard_port: int | None,
    base: Path,
    cores: Sequence[int] | None = None,
) -> Plan:
    """Assign ports and argv to every resource; ``ManifestError`` names an unusable reference.

    ``cores`` are the CPUs replicas are pinned within (default: this process's affinity).
    """
    services = [r for r in resources if isinstance(r, InferenceService)]
    experiments = [r for r in resources if isinstance(r, LoadExperiment)]
    by_name: dict[tuple[str, str], ServerPlan] = {}
    server_plans = []
    for svc in services:
        key = (svc.namespace, svc.name)
        if key in by_name:
            raise ManifestError(f"InferenceService {svc.name}: defined twice")
        if svc.spec.replicas == 0:
            raise ManifestError(f"InferenceService {svc.name}: spec.replicas is 0; nothing to run locally")
        replica_ports = tuple(next(ports) for _ in range(svc.spec.replicas))
        env = {}
        if svc.spec.gpu and svc.spec.gpu.devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = svc.spec.gpu.devices
        limits = server_limits(svc, usable_cores() if cores is None else cores)
        plan = ServerPlan(
            name=svc.name,
            replica_ports=replica_ports,
            argv=tuple(
                tuple(pinned_argv(server_argv(svc, p, base), r.cores))
                for p, r in zip(replica_ports, limits.replicas, strict=True)
            ),
            env=env,
            balancer_port=next(ports) if svc.spec.replicas > 1 else None,
            ignored=tuple(ignored_server_fields(svc)),
            limits=limits,
        )
        by_name[key] = plan
        server_plans.append(plan)
    names = [e.name for e in experiments]
    exp_plans = []
    for index, exp in enumerate(experiments):
        if names.count(exp.name) > 1:
            raise ManifestError(f"LoadExperiment {exp.name}: defined twice")
        target = exp.spec.target
        if target.service is not None:
            server = by_name.get((exp.namespace, target.service))
            if server is None:
                raise ManifestError(
                    f"LoadExperiment {exp.name}: spec.target.service {target.service!r} is not an "
                    "InferenceService in the given files"
                )
            url = server.url
            metrics = [server.replica_url(i) + "/metrics" for i in range(len(server.replica_ports))]
        else:
            assert target.url is not None
            url, metrics = target.url, []
        control = dashboard_port + index if dashboard_port is not None else next(ports)
        results = results_for(exp.name)
        exp_plans.append(
            ExperimentPlan(
                name=exp.name,
                resource=exp,
                target_service=target.service,
                url=url,
                control_port=control,
                results_dir=results,
                schedule=schedule_document(exp),
                argv=tuple(loadgen_argv(exp, url, control, results, base, metrics)),
                ignored=tuple(ignored_experiment_fields(exp)),
            )
        )
    notes = [f"InferenceService {s.name}: ignored locally: {i}" for s in server_plans for i in s.ignored]
    notes += [f"InferenceService {s.name}: {n}" for s in server_plans if s.limits for n in s.limits.notes]
    notes += [f"LoadExperiment {e.name}: ignored locally: {i}" for e in exp_plans for i in e.ignored]
    return Plan(servers=tuple(server_plans), experiments=tuple(exp_plans), notes=tuple(notes))
