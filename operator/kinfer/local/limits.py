"""Local mode honours ``resources.limits.cpu`` and ``gpu.devices`` per replica — pure, so it is tested
without processes.

A pod's CPU limit is a CFS quota. Locally the limit is enforced by **CPU affinity**, which needs no
privilege (a cgroup v2 ``cpu.max`` needs a delegated, writable cgroup; the development machine's cgroups
are v1, so kinfer run writes no cgroup):
each replica's ``kinfer serve`` (the gunicorn master, before its workers fork) is pinned to
``ceil(limit)`` cores, distinct cores per replica while the machine has enough, so a fractional
limit rounds **up** (0.2 runs on one whole core). The run's notes, ``summary.json``
(``serverLimits``) and a sweep's report say so. ``gpu.devices`` listing several devices is split
between replicas ("0,1" and two replicas: "0" and "1"), the way a cluster gives each pod its own card;
a server without ``gpu`` sees no GPU (``CUDA_VISIBLE_DEVICES`` empty), as a pod without a GPU request
sees none, so a CPU point of a sweep runs on the CPU even on a GPU machine.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kinfer.api import InferenceService, ManifestError

#: How the CPU limit is enforced locally (the only mechanism on machines without a writable cgroup v2).
AFFINITY = "affinity"


def cpu_cores(quantity: str | int | float) -> float:
    """A CPU quantity ("500m", "0.5", 2) in cores; ``ManifestError`` on anything else."""
    text = str(quantity).strip()
    try:
        value = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise ManifestError(f"resources.limits.cpu {quantity!r} is not a CPU quantity (e.g. 2, 0.5, 500m)") from None
    if not math.isfinite(value) or value <= 0:
        raise ManifestError(f"resources.limits.cpu {quantity!r} must be more than 0 cores")
    return value


@dataclass(frozen=True)
class ReplicaLimits:
    """What one replica is given: the cores it is pinned to (None: unpinned) and its GPU devices."""

    cores: tuple[int, ...] | None = None
    gpu_devices: str | None = None


@dataclass(frozen=True)
class ServerLimits:
    """The limits of every replica of one InferenceService, and what to tell the user about them."""

    replicas: tuple[ReplicaLimits, ...]
    cpu_limit: float | None = None
    mechanism: str | None = None
    notes: tuple[str, ...] = field(default=())

    def describe(self) -> dict[str, object]:
        """``summary.json``'s ``serverLimits``: the limit, how it is enforced and what each replica got."""
        out: dict[str, object] = {}
        if self.cpu_limit is not None:
            out.update(
                cpu=self.cpu_limit,
                mechanism=self.mechanism,
                cores=[list(r.cores or ()) for r in self.replicas],
            )
        gpus = [r.gpu_devices for r in self.replicas]
        if any(gpus):
            out["gpuDevices"] = gpus
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def _pin(replicas: int, per_replica: int, cores: Sequence[int]) -> tuple[list[tuple[int, ...]], bool]:
    """Cores for each replica: consecutive blocks of ``per_replica``, wrapping (and so shared) only when
    the machine has fewer than ``replicas * per_replica``. Returns the blocks and whether any is shared."""
    per_replica = min(per_replica, len(cores))
    blocks = [tuple(cores[(i * per_replica + j) % len(cores)] for j in range(per_replica)) for i in range(replicas)]
    return blocks, replicas * per_replica > len(cores)


def _split_devices(devices: str, replicas: int) -> tuple[list[str], bool]:
    """``gpu.devices`` per replica: each its own device(s) when the list has at least one per replica,
    else every replica sees the whole list (shared). Returns the lists and whether they are split."""
    ids = devices.split(",")
    if replicas <= 1 or len(ids) < replicas:
        return [devices] * replicas, False
    share = len(ids) // replicas
    return [",".join(ids[i * share : (i + 1) * share]) for i in range(replicas)], True


def server_limits(svc: InferenceService, cores: Sequence[int]) -> ServerLimits:
    """Per-replica cores and GPU devices of ``svc`` on a machine whose usable cores are ``cores``."""
    spec, replicas = svc.spec, svc.spec.replicas
    notes: list[str] = []
    limit_q = spec.resources.limits.cpu if spec.resources and spec.resources.limits else None
    pinned: list[tuple[int, ...] | None] = [None] * replicas
    limit = None
    if limit_q is not None:
        limit = cpu_cores(limit_q)
        want = math.ceil(limit)
        blocks, shared = _pin(replicas, want, sorted(cores))
        pinned = list(blocks)
        text = ", ".join(f"replica {i}: {','.join(map(str, b))}" for i, b in enumerate(blocks))
        note = f"resources.limits.cpu {limit_q} enforced by CPU affinity ({text})"
        if want != limit:
            note += f"; affinity rounds a fractional limit up to whole cores ({limit:g} -> {want})"
        if want > len(cores):
            note += f"; only {len(cores)} core(s) here, so each replica gets them all"
        elif shared:
            note += f"; {replicas} x {want} core(s) exceed the {len(cores)} here, so replicas share cores"
        notes.append(note)
    # No gpu at all: no GPU, as in a pod without a GPU request. gpu.count is not honoured locally.
    gpus: list[str | None] = ["" if spec.gpu is None else None] * replicas
    if spec.gpu and spec.gpu.devices is not None:
        split, distinct = _split_devices(spec.gpu.devices, replicas)
        gpus = list(split)
        if distinct:
            notes.append(
                "gpu.devices split between replicas: "
                + ", ".join(f"replica {i}: CUDA_VISIBLE_DEVICES={d}" for i, d in enumerate(split))
            )
        elif replicas > 1:
            notes.append(f"gpu.devices {spec.gpu.devices}: fewer devices than replicas, so all replicas share them")
    return ServerLimits(
        replicas=tuple(ReplicaLimits(c, g) for c, g in zip(pinned, gpus, strict=True)),
        cpu_limit=limit,
        mechanism=AFFINITY if limit is not None else None,
        notes=tuple(notes),
    )


def usable_cores() -> list[int]:
    """The cores this process may run on."""
    return sorted(os.sched_getaffinity(0))


def pinned_argv(argv: Sequence[str], cores: Sequence[int] | None) -> list[str]:
    """``argv`` run under :mod:`kinfer.local.pin` on ``cores`` (unchanged when ``cores`` is None)."""
    if cores is None:
        return list(argv)
    return [argv[0], "-m", "kinfer.local.pin", ",".join(map(str, cores)), "--", *argv]


def write_limits(results: Path, limits: dict[str, object]) -> None:
    """Add ``serverLimits`` to the results' ``summary.json`` (kept as is when there is no summary)."""
    import json

    path = results / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    summary["serverLimits"] = limits
    tmp = results / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(path)
