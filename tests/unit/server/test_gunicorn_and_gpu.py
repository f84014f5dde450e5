"""gunicorn settings built from the config; GPU discovery and per-process memory caps (nvidia-smi and the
frameworks faked: no GPU here)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker

from kinfer.server import gpu
from kinfer.server.backends import tensorflow as tf_backend
from kinfer.server.backends.base import BackendOptions
from kinfer.server.backends.onnxruntime import OnnxRuntimeBackend
from kinfer.server.config import ServerConfig, resolve
from kinfer.server.gunicorn_app import gunicorn_options


def test_one_thread_uses_sync_workers_like_the_seed() -> None:
    opts = gunicorn_options(ServerConfig(workers=8, threads=1, host="0.0.0.0", port=5000))
    assert issubclass(opts["worker_class"], SyncWorker)  # with a deadline on reading each request
    assert opts["workers"] == 8
    assert opts["bind"] == "0.0.0.0:5000"
    assert opts["preload_app"] is False  # the model loads in each worker, after fork


def test_threads_select_gthread_workers_and_ipv6_hosts_are_bracketed() -> None:
    opts = gunicorn_options(ServerConfig(threads=4, host="::1", port=0, graceful_timeout=7))
    assert issubclass(opts["worker_class"], ThreadWorker)
    assert opts["threads"] == 4
    assert opts["bind"] == "[::1]:0"
    assert opts["graceful_timeout"] == 7
    assert callable(opts["child_exit"])


@pytest.fixture
def fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\necho '0, NVIDIA H100, 81559'\necho '1, NVIDIA H100, 81559'\necho '2, NVIDIA A10, 23028'\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


def test_visible_gpus_follow_cuda_visible_devices(fake_smi: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    gpus = gpu.visible_gpus()
    assert [(g.index, g.name) for g in gpus] == [(0, "NVIDIA A10"), (1, "NVIDIA H100")]
    assert gpus[0].total_bytes == 23028 * 2**20
    assert "CUDA_VISIBLE_DEVICES=2,0" in gpu.describe()


def test_all_gpus_are_visible_without_the_variable(fake_smi: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert len(gpu.visible_gpus()) == 3


def test_no_nvidia_smi_means_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu.visible_gpus() == []
    assert "none (CPU)" in gpu.describe()


class _FakeTf:
    """The slice of ``tensorflow`` that ``_configure_gpus`` calls, recording what it is asked."""

    def __init__(self, devices: list[str]) -> None:
        self.devices = devices
        self.calls: list[tuple[str, object, object]] = []
        self.config = SimpleNamespace(
            list_physical_devices=lambda kind: self.devices if kind == "GPU" else [],
            set_logical_device_configuration=lambda dev, confs: self.calls.append(("limit", dev, confs)),
            LogicalDeviceConfiguration=lambda memory_limit: memory_limit,
            experimental=SimpleNamespace(set_memory_growth=lambda dev, on: self.calls.append(("growth", dev, on))),
        )


def test_tensorflow_caps_each_visible_gpu_at_the_memory_fraction(
    fake_smi: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    tf = _FakeTf(["gpu:0", "gpu:1"])
    tf_backend._configure_gpus(tf, 0.25)
    # the A10 (23028 MiB) is device 0 in this process, an H100 (81559 MiB) device 1
    assert tf.calls == [("limit", "gpu:0", [int(23028 * 0.25)]), ("limit", "gpu:1", [int(81559 * 0.25)])]


def test_tensorflow_grows_memory_on_demand_without_a_fraction_and_ignores_cpus(fake_smi: None) -> None:
    tf = _FakeTf(["gpu:0"])
    tf_backend._configure_gpus(tf, None)
    assert tf.calls == [("growth", "gpu:0", True)]
    cpu_only = _FakeTf([])
    tf_backend._configure_gpus(cpu_only, 0.5)
    assert cpu_only.calls == []


def _ort_backend(fraction: float | None) -> OnnxRuntimeBackend:
    spec = resolve(ServerConfig(known_model="ssd-mobilenet", format="null"))[0]
    return OnnxRuntimeBackend(spec, BackendOptions(memory_fraction=fraction))


def test_onnxruntime_uses_cuda_capped_at_the_fraction_of_the_first_visible_gpu(
    fake_smi: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    ort = SimpleNamespace(get_available_providers=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    providers = _ort_backend(0.5)._providers(ort)
    assert providers == [
        ("CUDAExecutionProvider", {"device_id": 0, "gpu_mem_limit": 81559 * 2**20 // 2}),
        "CPUExecutionProvider",
    ]
    assert _ort_backend(None)._providers(ort)[0] == ("CUDAExecutionProvider", {"device_id": 0})


def test_onnxruntime_stays_on_cpu_without_a_gpu_or_without_the_cuda_provider(
    fake_smi: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cpu_build = SimpleNamespace(get_available_providers=lambda: ["CPUExecutionProvider"])
    assert _ort_backend(0.5)._providers(cpu_build) == ["CPUExecutionProvider"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    gpu_build = SimpleNamespace(get_available_providers=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert _ort_backend(0.5)._providers(gpu_build) == ["CPUExecutionProvider"]
