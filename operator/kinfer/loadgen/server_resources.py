"""The target server's resources per record: its pods' ``/metrics`` scraped once per record interval.

The model server exports, in every pod (DESIGN.md §5), each worker's CPU seconds and resident memory
(``kinfer_server_worker_cpu_seconds{pid}``, ``kinfer_server_worker_resident_memory_bytes{pid}``) and,
for each GPU it sees, ``kinfer_server_gpu_utilization_ratio{gpu}`` and
``kinfer_server_gpu_memory_used_bytes{gpu}``. The generator scrapes a list of those URLs (one per pod
or local replica; replaced at run time by ``POST /api/server-metrics``) and turns them into four
numbers per record:

- ``serverCPU``: cores, the workers' CPU seconds between two scrapes of the same pod divided by the
  time between them, summed over pods (a worker first seen in this scrape adds from the next one);
- ``serverMemoryMB``: resident memory of every worker of every pod, MiB;
- ``serverGPUUtil``: utilization averaged over the GPUs, percent (0-100);
- ``serverGPUMemoryMB``: GPU memory in use summed over the GPUs, MiB.

GPUs are counted once per host: replicas on one machine (``kinfer run``) all see GPU 0, and its
memory is the device's, whoever uses it. Without a GPU the GPU numbers are ``None``, never 0; a scrape
that fails (refused, timed out, not Prometheus text) makes that interval's numbers ``None`` too, never
zeros. Scrapes run on the parent's event loop with a timeout below the interval, never on the
generators' send loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

CPU_SECONDS = "kinfer_server_worker_cpu_seconds"
MEMORY_BYTES = "kinfer_server_worker_resident_memory_bytes"
GPU_UTILIZATION = "kinfer_server_gpu_utilization_ratio"
GPU_MEMORY = "kinfer_server_gpu_memory_used_bytes"
MIB = float(1 << 20)
#: Most URLs a run scrapes (one per pod of the target).
MAX_URLS = 1000
#: The record fields, in the order records.csv appends them after DESIGN.md §9's columns.
SERVER_FIELDS = ("serverCPU", "serverMemoryMB", "serverGPUUtil", "serverGPUMemoryMB")


class ScrapeError(ValueError):
    """A ``/metrics`` answer that could not be read."""


@dataclass(frozen=True)
class PodReading:
    """One scrape of one pod's ``/metrics``."""

    at: float
    """``time.monotonic()`` when the answer arrived."""
    cpu_seconds: dict[str, float]
    """Each worker's CPU seconds so far, by ``pid`` label."""
    memory_bytes: float
    """Resident memory summed over the workers."""
    gpus: dict[str, tuple[float, float]] = field(default_factory=dict)
    """``{gpu label: (utilization 0-1, memory used bytes)}``."""


@dataclass(frozen=True)
class ServerResources:
    """The target's resources over one record interval; ``None`` where nothing was measured."""

    cpu_cores: float | None = None
    memory_mb: float | None = None
    gpu_util_pct: float | None = None
    gpu_memory_mb: float | None = None

    def to_json(self) -> dict[str, float | None]:
        """The record fields (``serverCPU``, ``serverMemoryMB``, ``serverGPUUtil``, ``serverGPUMemoryMB``)."""
        values = (self.cpu_cores, self.memory_mb, self.gpu_util_pct, self.gpu_memory_mb)
        digits = (3, 1, 1, 1)
        return {k: None if v is None else round(v, d) for k, v, d in zip(SERVER_FIELDS, values, digits, strict=True)}


EMPTY = ServerResources()


def parse_metrics(text: str, at: float) -> PodReading:
    """Read one pod's exposition text (``ScrapeError`` when it is not Prometheus text or lacks the
    worker series: a URL that is not a kinfer model server)."""
    cpu: dict[str, float] = {}
    memory = 0.0
    seen_memory = False
    gpus: dict[str, list[float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name, labels, value = sample.name, sample.labels, float(sample.value)
                if not math.isfinite(value):
                    continue
                if name == CPU_SECONDS:
                    cpu[labels.get("pid", "")] = cpu.get(labels.get("pid", ""), 0.0) + value
                elif name == MEMORY_BYTES:
                    memory += value
                    seen_memory = True
                elif name in (GPU_UTILIZATION, GPU_MEMORY) and "gpu" in labels:
                    slot = gpus.setdefault(labels["gpu"], [math.nan, math.nan])
                    slot[0 if name == GPU_UTILIZATION else 1] = value
    except ValueError as exc:
        raise ScrapeError(f"not Prometheus text: {exc}") from None
    if not cpu or not seen_memory:
        raise ScrapeError(f"no {CPU_SECONDS} / {MEMORY_BYTES} series: not a kinfer model server's /metrics")
    return PodReading(at, cpu, memory, {g: (u, m) for g, (u, m) in gpus.items()})


def combine(previous: dict[str, PodReading], current: dict[str, PodReading]) -> ServerResources:
    """The interval's resources from every pod's reading now and (for CPU) its reading before."""
    if not current:
        return EMPTY
    cores = 0.0
    any_delta = False
    for url, now in current.items():
        before = previous.get(url)
        if before is None or now.at <= before.at:
            continue
        used = 0.0
        for pid, seconds in now.cpu_seconds.items():
            old = before.cpu_seconds.get(pid)
            if old is not None and seconds >= old:  # a new worker (or a reused pid) adds from the next scrape
                used += seconds - old
        cores += used / (now.at - before.at)
        any_delta = True
    memory = sum(r.memory_bytes for r in current.values()) / MIB
    util: dict[tuple[str, str], float] = {}
    gpu_memory: dict[tuple[str, str], float] = {}
    for url, reading in current.items():
        host = urlsplit(url).hostname or url
        for gpu, (ratio, used_bytes) in reading.gpus.items():
            if not math.isnan(ratio):
                util[(host, gpu)] = ratio
            if not math.isnan(used_bytes):
                gpu_memory[(host, gpu)] = used_bytes
    return ServerResources(
        cpu_cores=cores if any_delta else None,
        memory_mb=memory,
        gpu_util_pct=100.0 * sum(util.values()) / len(util) if util else None,
        gpu_memory_mb=sum(gpu_memory.values()) / MIB if gpu_memory else None,
    )


def validate_urls(value: Any) -> list[str]:
    """A list of ``http(s)://host[:port]/path`` URLs (``ValueError`` naming the first bad one)."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list):
        raise ValueError(f"urls must be a list of http(s) URLs, got {type(value).__name__}")
    if len(value) > MAX_URLS:
        raise ValueError(f"at most {MAX_URLS} URLs, got {len(value)}")
    out = []
    for url in value:
        if not isinstance(url, str):
            raise ValueError(f"each URL must be a string, got {url!r}")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"invalid URL {url!r}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid URL {url!r}: expected http://host[:port]/metrics")
        out.append(url)
    return list(dict.fromkeys(out))


class ServerScraper:
    """Scrapes ``urls`` once per ``interval`` and keeps the newest interval's :class:`ServerResources`.

    :meth:`take` hands each interval's numbers to one record only: a record that finds no new scrape
    (the last one still running, or failed) gets empty values rather than the previous interval's.
    """

    def __init__(
        self,
        urls: Sequence[str],
        interval: float,
        *,
        fetch: Callable[[str, float], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.urls = list(urls)
        self.interval = interval
        #: Each scrape's deadline: well inside the interval, so the next one is never held up.
        self.timeout = max(0.05, 0.6 * interval)
        #: Scrapes happen this long before each record's end, so their numbers are there when it is.
        self.lead = 0.2 * interval
        self.last_error: str | None = None
        self._fetch = fetch
        self._clock = clock
        self._previous: dict[str, PodReading] = {}
        self._latest: ServerResources | None = None
        self._session: aiohttp.ClientSession | None = None

    def set_urls(self, urls: Sequence[str]) -> None:
        """Replace the pods scraped (their earlier readings are kept for the URLs that stay)."""
        self.urls = list(urls)
        self._previous = {u: r for u, r in self._previous.items() if u in self.urls}

    def take(self) -> ServerResources:
        """The newest interval's numbers, once; :data:`EMPTY` when no new scrape has completed."""
        latest, self._latest = self._latest, None
        return latest if latest is not None else EMPTY

    async def scrape_once(self) -> ServerResources:
        """Scrape every URL now; the interval since the previous scrape becomes the newest numbers."""
        urls = list(self.urls)
        if not urls:
            self._latest = EMPTY
            return EMPTY
        results = await asyncio.gather(*(self._read(url) for url in urls), return_exceptions=True)
        current: dict[str, PodReading] = {}
        errors = []
        for url, result in zip(urls, results, strict=True):
            if isinstance(result, PodReading):
                current[url] = result
            else:
                errors.append(f"{url}: {type(result).__name__}: {result}")
        previous = self._previous
        # a pod that failed keeps its last good reading, so the next success measures over both intervals
        self._previous = {**{u: r for u, r in previous.items() if u in self.urls}, **current}
        if errors or urls != self.urls:
            self.last_error = "; ".join(errors) or None
            self._latest = EMPTY
            return EMPTY
        self.last_error = None
        resources = combine(previous, current)
        self._latest = resources
        return resources

    async def _read(self, url: str) -> PodReading:
        if self._fetch is not None:
            text = await self._fetch(url, self.timeout)
        else:
            if self._session is None:
                self._session = aiohttp.ClientSession()
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with self._session.get(url, timeout=timeout) as resp:
                if resp.status != 200:
                    raise ScrapeError(f"HTTP {resp.status}")
                text = await resp.text()
        return parse_metrics(text, self._clock())

    async def run(self, origin: Callable[[], float | None], stop: asyncio.Event) -> None:
        """Scrape at once (the baseline), then ``lead`` before the end of every record interval counted
        from ``origin()`` (the run's first scheduled send, once known) until ``stop`` is set."""
        try:
            with contextlib.suppress(Exception):
                await self.scrape_once()
            self._latest = None  # the baseline measures no interval
            while not stop.is_set():
                now = self._clock()
                t0 = origin()
                if t0 is None:
                    wake = now + self.interval
                else:
                    k = math.floor((now - t0 + self.lead) / self.interval) + 1
                    wake = t0 + k * self.interval - self.lead
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(wake - now, 0.0))
                    return
                try:
                    await self.scrape_once()
                except Exception as exc:  # never let one bad scrape end the sampling
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self._latest = EMPTY
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
