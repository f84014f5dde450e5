"""Prometheus metrics and the ``Server-Timing`` header, both built from the same per-stage timings.

Under gunicorn, ``kinfer serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before any
worker starts, so each worker writes its samples to files and ``/metrics`` in any worker aggregates
all of them (the master marks dead workers' files on ``child_exit``). Without that variable (unit
tests, the Flask test client) the metrics live in the app's own registry.

Resources are read at scrape time, for every worker: the worker answering ``/metrics`` reads each live
worker's CPU time and resident memory from the OS (psutil, by the ``pid`` label of the aggregate) and
the GPUs through NVML, and puts those readings in place of the values the workers last wrote. A
generator scraping once per 1 s record therefore sees every worker's CPU counter as of that scrape,
not as of each worker's last background sample (every 2 s, only so that an idle worker is listed).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator

import psutil
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from kinfer.server.nvml import GpuSample, GpuSampler

CPU_SECONDS = "kinfer_server_worker_cpu_seconds"
MEMORY_BYTES = "kinfer_server_worker_resident_memory_bytes"
GPU_UTILIZATION = "kinfer_server_gpu_utilization_ratio"
GPU_MEMORY = "kinfer_server_gpu_memory_used_bytes"
#: The stages of a request, in the order they happen and appear in ``Server-Timing``.
STAGES = ("queue", "preprocess", "infer", "postprocess")
#: ``server_timing``'s format: one ``%``-substitution instead of a formatted string per stage.
_SERVER_TIMING = ", ".join(f"{stage};dur=%.2f" for stage in STAGES)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def multiprocess_enabled() -> bool:
    """Whether samples go to files shared by all workers (``PROMETHEUS_MULTIPROC_DIR`` is set)."""
    return bool(os.environ.get(MULTIPROC_ENV))


def server_timing(stages: dict[str, float]) -> str:
    """The ``Server-Timing`` header value: every stage in milliseconds, 0 for stages not run.

    Example: ``queue;dur=0.12, preprocess;dur=2.31, infer;dur=10.20, postprocess;dur=0.40``.
    """
    get = stages.get
    return _SERVER_TIMING % tuple([get(stage, 0.0) * 1000.0 for stage in STAGES])


class ServerMetrics:
    """The server's metrics, registered in ``registry`` (or written to the multiprocess files)."""

    def __init__(self, model: str, registry: CollectorRegistry | None = None, gpus: GpuSampler | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.model = model
        reg = self.registry
        self.requests = Counter(
            "kinfer_server_requests", "HTTP requests answered, by route and status code.",
            ["route", "code"], registry=reg,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "kinfer_server_request_duration_seconds",
            "Time from a request reaching the app until its response starts, by route.",
            ["route"], buckets=_SECONDS_BUCKETS, registry=reg,
        )  # fmt: skip
        self.stage_seconds = Histogram(
            "kinfer_server_stage_duration_seconds",
            "Time per request stage: queue (waiting for a batch), preprocess, infer, postprocess.",
            ["model", "stage"], buckets=_SECONDS_BUCKETS, registry=reg,
        )  # fmt: skip
        self.batch_size = Histogram(
            "kinfer_server_batch_size", "Images per model call.", ["model"],
            buckets=_BATCH_BUCKETS, registry=reg,
        )  # fmt: skip
        self.inference_errors = Counter(
            "kinfer_server_inference_errors", "Model calls that raised.", ["model"], registry=reg
        )
        self.workers_ready = Gauge(
            "kinfer_server_workers_ready", "Workers whose model is loaded and warm.", ["model"],
            multiprocess_mode="livesum", registry=reg,
        )  # fmt: skip
        self.in_flight = Gauge(
            "kinfer_server_requests_in_flight", "Requests being handled now.",
            multiprocess_mode="livesum", registry=reg,
        )  # fmt: skip
        self.cpu_seconds = Gauge(
            CPU_SECONDS, "CPU time (user+system) used by each worker process.",
            multiprocess_mode="liveall", registry=reg,
        )  # fmt: skip
        self.memory_bytes = Gauge(
            MEMORY_BYTES, "Resident memory of each worker process.",
            multiprocess_mode="liveall", registry=reg,
        )  # fmt: skip
        # Every worker sees the same devices: the aggregate keeps one (the largest) reading per GPU.
        self.gpu_utilization = Gauge(
            GPU_UTILIZATION, "Share of the last sample period a kernel ran on the GPU, 0-1.",
            ["gpu"], multiprocess_mode="max", registry=reg,
        )  # fmt: skip
        self.gpu_memory = Gauge(
            GPU_MEMORY, "GPU memory in use (all processes on the device).",
            ["gpu"], multiprocess_mode="max", registry=reg,
        )  # fmt: skip
        self._gpus = gpus
        #: the GPUs' readings of the last sample (what a scrape reports for every worker)
        self._gpu_readings: list[GpuSample] = []
        #: other workers' processes, by pid, kept between scrapes (psutil checks a pid was not reused)
        self._workers: dict[int, psutil.Process] = {}
        self._stage_children: dict[str, Histogram] = {}
        self._batch_child = self.batch_size.labels(model)
        #: batch sizes not yet written: a model call only queues its size (see ``observe_batch``)
        self._pending_batches: deque[int] = deque()
        self._request_children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self._process = psutil.Process()
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()

    def observe_request(self, route: str, code: int, seconds: float, stages: dict[str, float]) -> None:
        """Record one answered request: its count, its time in the handler and the stages it went through
        (stages it skipped are not recorded as zero).

        The app calls this once the response has been written, so none of it adds to the latency a client
        sees; labelled children are looked up once and kept, which spares a lock and a dict per sample.
        """
        for stage, stage_seconds in stages.items():
            child = self._stage_children.get(stage)
            if child is None:
                child = self._stage_children[stage] = self.stage_seconds.labels(self.model, stage)
            child.observe(stage_seconds)
        key = (route, code)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(route, str(code)),
                self.request_seconds.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)
        self.flush_batches()

    def observe_batch(self, size: int) -> None:
        """Note the size of one model call. It runs on the request path, so it only queues the size:
        the histogram is written by the next ``observe_request`` (after a response has gone out) or
        before a scrape, whichever comes first."""
        self._pending_batches.append(size)  # deque.append is atomic: batcher and request threads alike

    def flush_batches(self) -> None:
        """Write the queued batch sizes into the histogram."""
        while True:
            try:
                size = self._pending_batches.popleft()
            except IndexError:
                return
            self._batch_child.observe(size)

    def sample_process(self) -> None:
        """Refresh this worker's CPU and memory gauges from psutil, and the visible GPUs' from NVML."""
        try:
            cpu = self._process.cpu_times()
            self.cpu_seconds.set(cpu.user + cpu.system)
            self.memory_bytes.set(self._process.memory_info().rss)
        except psutil.Error:
            pass
        if self._gpus is not None:
            self._gpu_readings = self._gpus.sample()
            for reading in self._gpu_readings:
                self.gpu_utilization.labels(reading.gpu).set(reading.utilization_ratio)
                self.gpu_memory.labels(reading.gpu).set(reading.memory_used_bytes)

    def start_sampling(self, interval_s: float = 2.0) -> None:
        """Sample CPU and memory every ``interval_s`` in a daemon thread, so idle workers report too."""
        if self._sampler is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.sample_process()

        self.sample_process()
        self._sampler = threading.Thread(target=loop, name="kinfer-metrics", daemon=True)
        self._sampler.start()

    def stop_sampling(self) -> None:
        self._stop.set()

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition: all workers' samples in multiprocess mode, else this registry's."""
        self.sample_process()
        self.flush_batches()
        if multiprocess_enabled():
            registry = CollectorRegistry()
            aggregate = prom_multiprocess.MultiProcessCollector(None)  # type: ignore[no-untyped-call]
            gpus = self._gpu_readings if self._gpus is not None and self._gpus.available else None
            registry.register(ReadNow(aggregate, self._read_worker, gpus))
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


    def _read_worker(self, pid: int) -> tuple[float, int] | None:
        """A worker's CPU seconds (user+system) and resident bytes now; ``None`` once it has exited."""
        proc = self._workers.get(pid)
        try:
            if proc is None:
                proc = self._workers[pid] = psutil.Process(pid)
            with proc.oneshot():
                cpu = proc.cpu_times()
                return cpu.user + cpu.system, proc.memory_info().rss
        except psutil.Error:
            self._workers.pop(pid, None)
            return None


class ReadNow(Collector):
    """The multiprocess aggregate with the resource gauges read at scrape time: each worker's CPU and
    memory from ``read(pid)`` (a worker that has exited is left out), and the GPUs' series from
    ``gpus`` (this scrape's NVML readings; ``None``: keep the aggregate, which is absent without a GPU).
    The workers' files hold values up to one background period old; the GPU gauges' ``max`` over
    workers would even report an old peak."""

    def __init__(
        self, inner: Collector, read: Callable[[int], tuple[float, int] | None], gpus: list[GpuSample] | None
    ) -> None:
        self._inner = inner
        self._read = read
        self._gpus = gpus

    def collect(self) -> Iterable[Metric]:
        readings: dict[int, tuple[float, int] | None] = {}  # one reading per worker and scrape
        for metric in self._inner.collect():
            if metric.name in (CPU_SECONDS, MEMORY_BYTES):
                which = 0 if metric.name == CPU_SECONDS else 1
                metric.samples = list(self._workers_now(metric.samples, which, readings))
            elif self._gpus is not None and metric.name in (GPU_UTILIZATION, GPU_MEMORY):
                metric.samples = [
                    Sample(metric.name, {"gpu": g.gpu},
                           g.utilization_ratio if metric.name == GPU_UTILIZATION else float(g.memory_used_bytes))
                    for g in self._gpus
                ]  # fmt: skip
            yield metric

    def _workers_now(
        self, samples: list[Sample], which: int, readings: dict[int, tuple[float, int] | None]
    ) -> Iterator[Sample]:
        for sample in samples:
            try:
                pid = int(sample.labels.get("pid", ""))
            except ValueError:
                yield sample
                continue
            if pid not in readings:
                readings[pid] = self._read(pid)
            reading = readings[pid]
            if reading is not None:
                yield sample._replace(value=float(reading[which]))


def mark_worker_dead(pid: int) -> None:
    """Gunicorn ``child_exit``: drop a dead worker's live gauges from the aggregate."""
    if multiprocess_enabled():
        prom_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
