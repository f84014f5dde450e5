"""gunicorn settings built from the config, and GPU discovery through nvidia-smi (faked)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kinfer.server import gpu
from kinfer.server.config import ServerConfig
from kinfer.server.gunicorn_app import gunicorn_options


def test_one_thread_uses_sync_workers_like_the_seed() -> None:
    opts = gunicorn_options(ServerConfig(workers=8, threads=1, host="0.0.0.0", port=5000))
    assert opts["worker_class"] == "sync"
    assert opts["workers"] == 8
    assert opts["bind"] == "0.0.0.0:5000"
    assert opts["preload_app"] is False  # the model loads in each worker, after fork


def test_threads_select_gthread_workers_and_ipv6_hosts_are_bracketed() -> None:
    opts = gunicorn_options(ServerConfig(threads=4, host="::1", port=0, graceful_timeout=7))
    assert opts["worker_class"] == "gthread"
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
