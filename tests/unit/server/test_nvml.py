"""GPU sampling through NVML with a test double at the library boundary (``pynvml``'s calls): the
visible devices only, utilization as a ratio, memory in bytes, exported per GPU; without NVML (or a
GPU) the GPU series are absent, never zero."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from kinfer.server.metrics import ServerMetrics
from kinfer.server.nvml import GpuSampler


class FakeNvml:
    """The part of ``pynvml`` the sampler calls, for a node with three GPUs."""

    def __init__(self, fail_init: bool = False) -> None:
        self.fail_init = fail_init
        self.util = {0: 10, 1: 55, 2: 90}
        self.used = {0: 1 << 30, 1: 3 << 30, 2: 5 << 30}
        self.shut = False

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self) -> int:
        return 3

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> bytes:
        return f"GPU-{handle}aaaa".encode()

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=self.util[handle], memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(used=self.used[handle], total=16 << 30, free=0)

    def nvmlShutdown(self) -> None:
        self.shut = True


def test_only_the_visible_gpus_are_sampled_as_ratios_and_bytes() -> None:
    sampler = GpuSampler(FakeNvml(), env={"CUDA_VISIBLE_DEVICES": "2,0"})
    assert sampler.available
    readings = {s.gpu: s for s in sampler.sample()}
    assert set(readings) == {"0", "2"}
    assert readings["2"].utilization_ratio == 0.9 and readings["2"].memory_used_bytes == 5 << 30
    by_uuid = GpuSampler(FakeNvml(), env={"CUDA_VISIBLE_DEVICES": "GPU-1aaaa"})
    assert [s.gpu for s in by_uuid.sample()] == ["1"]
    every = GpuSampler(FakeNvml(), env={})
    assert [s.gpu for s in every.sample()] == ["0", "1", "2"]


def test_a_device_that_stops_answering_is_skipped() -> None:
    nvml = FakeNvml()
    sampler = GpuSampler(nvml, env={})
    del nvml.util[1]
    assert [s.gpu for s in sampler.sample()] == ["0", "2"]
    sampler.close()
    assert nvml.shut


def test_the_server_exports_gpu_gauges_per_device() -> None:
    metrics = ServerMetrics(
        "m", registry=CollectorRegistry(), gpus=GpuSampler(FakeNvml(), env={"CUDA_VISIBLE_DEVICES": "1"})
    )
    metrics.sample_process()
    text = generate_latest(metrics.registry).decode()
    assert 'kinfer_server_gpu_utilization_ratio{gpu="1"} 0.55' in text
    assert 'kinfer_server_gpu_memory_used_bytes{gpu="1"} 3.221225472e+09' in text
    assert 'gpu="0"' not in text


def test_without_nvml_or_a_gpu_the_gpu_series_are_absent_not_zero() -> None:
    broken = GpuSampler(FakeNvml(fail_init=True), env={})
    assert not broken.available and "Shared Library Not Found" in broken.reason
    none_visible = GpuSampler(FakeNvml(), env={"CUDA_VISIBLE_DEVICES": ""})
    assert not none_visible.available and none_visible.reason == "no GPU visible to this process"
    real = GpuSampler(env={})  # this machine: nvidia-ml-py installed, no driver
    assert not real.available
    metrics = ServerMetrics("m", registry=CollectorRegistry(), gpus=real)
    metrics.sample_process()
    text = generate_latest(metrics.registry).decode()
    assert "kinfer_server_gpu_utilization_ratio{" not in text and "kinfer_server_gpu_memory_used_bytes{" not in text
