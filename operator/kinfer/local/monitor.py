"""What ``kinfer run`` watches while experiments run: generator snapshots and server CPU/memory.

The generator's ``GET /api/status`` is the same JSON snapshot the operator copies into the resource's
status; the server's CPU and memory come from its process tree (gunicorn master + workers), sampled
once per record interval like the seeds' GPU/CPU usage beside latency.
"""

from __future__ import annotations

import contextlib
import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil


@dataclass(frozen=True)
class ResourceSample:
    """One sample of one server's process tree."""

    at: float
    service: str
    cpu_percent: float
    rss_mb: float
    processes: int


class ProcessTreeSampler:
    """CPU % (of one core) and resident memory of a process and all its descendants."""

    def __init__(self, service: str, pids: list[int]) -> None:
        self.service = service
        self._roots = pids
        self._procs: dict[int, psutil.Process] = {}

    def sample(self) -> ResourceSample:
        """Sum over the live tree; a process seen for the first time contributes from the next sample."""
        seen: dict[int, psutil.Process] = {}
        for pid in self._roots:
            with contextlib.suppress(psutil.Error):
                root = self._procs.get(pid) or psutil.Process(pid)
                seen[pid] = root
                for child in root.children(recursive=True):
                    seen[child.pid] = self._procs.get(child.pid, child)
        cpu = rss = 0.0
        for pid, proc in seen.items():
            with contextlib.suppress(psutil.Error):
                with proc.oneshot():
                    usage = proc.cpu_percent(None)
                    rss += proc.memory_info().rss
                if pid in self._procs:
                    cpu += usage
        self._procs = seen
        return ResourceSample(time.time(), self.service, cpu, rss / 2**20, len(seen))


def write_samples(path: Path, samples: list[ResourceSample], start: float) -> None:
    """``server_resources.csv``: t (s since the experiment started), service, cpuPercent, rssMB."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["t", "service", "cpuPercent", "rssMB", "processes"])
        for s in samples:
            if s.at >= start:
                writer.writerow(
                    [f"{s.at - start:.3f}", s.service, f"{s.cpu_percent:.1f}", f"{s.rss_mb:.1f}", s.processes]
                )


async def fetch_status(session: aiohttp.ClientSession, control_url: str) -> dict[str, Any] | None:
    """The generator's latest snapshot, or None while it cannot be reached."""
    try:
        async with session.get(control_url + "/api/status") as resp:
            if resp.status != 200:
                return None
            data: dict[str, Any] = await resp.json()
            return data
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
