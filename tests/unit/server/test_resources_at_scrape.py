"""A scrape reports every worker's CPU and memory, and the GPUs, as read at that moment: the worker
answering ``/metrics`` reads each worker's process (real psutil readings here) in place of the values
the workers last wrote, leaves out a worker that has exited, and puts this scrape's NVML readings (a
fake NVML at the library boundary) in place of the workers' older peaks."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from kinfer.server.metrics import CPU_SECONDS, GPU_UTILIZATION, MEMORY_BYTES, ReadNow, ServerMetrics
from kinfer.server.nvml import GpuSample, GpuSampler
from tests.unit.server.test_nvml import FakeNvml


def aggregate(pids: list[int]) -> CollectorRegistry:
    """What the multiprocess files would say: stale values per worker pid and an old GPU peak."""
    reg = CollectorRegistry()
    cpu = Gauge(CPU_SECONDS, "cpu", ["pid"], registry=reg)
    memory = Gauge(MEMORY_BYTES, "rss", ["pid"], registry=reg)
    gpu = Gauge(GPU_UTILIZATION, "util", ["gpu"], registry=reg)
    for pid in pids:
        cpu.labels(str(pid)).set(0.0)
        memory.labels(str(pid)).set(1.0)
    gpu.labels("0").set(0.99)
    return reg


def values(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line.rpartition(" ")
            out[labels[len(name) :]] = float(value)
    return out


def test_each_worker_is_read_now_and_an_exited_one_is_left_out() -> None:
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = int(exited.stdout)
    me = os.getpid()
    sum(i * i for i in range(200_000))  # some CPU time of this process
    metrics = ServerMetrics("m", registry=CollectorRegistry())
    reg = CollectorRegistry()
    reg.register(ReadNow(aggregate([me, gone]), metrics._read_worker, None))
    text = generate_latest(reg).decode()
    cpu, rss = values(text, CPU_SECONDS), values(text, MEMORY_BYTES)
    assert set(cpu) == set(rss) == {f'{{pid="{me}"}}'}
    times = psutil.Process(me).cpu_times()
    assert 0.0 < cpu[f'{{pid="{me}"}}'] <= times.user + times.system
    assert rss[f'{{pid="{me}"}}'] > 1e6
    # without a GPU sampler the aggregate's GPU series stay as they are
    assert values(text, GPU_UTILIZATION) == {'{gpu="0"}': 0.99}


def test_the_gpus_are_this_scrapes_readings_not_an_old_peak() -> None:
    reading = GpuSampler(FakeNvml(), env={"CUDA_VISIBLE_DEVICES": "0"}).sample()
    assert reading == [GpuSample("0", 0.1, 1 << 30)]
    reg = CollectorRegistry()
    reg.register(ReadNow(aggregate([]), lambda pid: None, reading))
    assert values(generate_latest(reg).decode(), GPU_UTILIZATION) == {'{gpu="0"}': 0.1}
