"""GPU utilization and memory of the GPUs this process sees, sampled through NVML (``nvidia-ml-py``).

The seed's table put GPU % beside each rate's p99; the server samples it where it runs, so a cluster run
reports it as a local one does. NVML enumerates every GPU of the node, whatever ``CUDA_VISIBLE_DEVICES``
says, so the devices are narrowed to that list (indexes or ``GPU-…`` UUIDs) when it is set. Without the
library, a driver or a GPU there is nothing to sample: the GPU series are absent, never zero.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("kinfer.server.nvml")


@dataclass(frozen=True)
class GpuSample:
    """One GPU's reading."""

    gpu: str
    """NVML index of the device on the node (the ``gpu`` label)."""
    utilization_ratio: float
    """Share of the last sample period a kernel ran, 0-1 (NVML's utilization.gpu / 100)."""
    memory_used_bytes: int


def _visible(env: dict[str, str] | os._Environ[str]) -> list[str] | None:
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]


class GpuSampler:
    """Reads the visible GPUs through NVML; ``available`` is False when NVML cannot be used."""

    def __init__(self, nvml: Any = None, env: dict[str, str] | None = None) -> None:
        self._nvml = nvml
        self._handles: list[tuple[str, Any]] = []
        self.available = False
        self.reason = ""
        try:
            if self._nvml is None:
                import pynvml  # nvidia-ml-py: the C library is the driver's, loaded on nvmlInit

                self._nvml = pynvml
            self._nvml.nvmlInit()
            visible = _visible(env if env is not None else os.environ)
            for index in range(self._nvml.nvmlDeviceGetCount()):
                handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
                if visible is not None and not self._selected(index, handle, visible):
                    continue
                self._handles.append((str(index), handle))
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, driver missing: no GPU series
            self.reason = f"{type(exc).__name__}: {exc}"
            return
        self.available = bool(self._handles)
        if not self.available:
            self.reason = "no GPU visible to this process"

    def _selected(self, index: int, handle: Any, visible: list[str]) -> bool:
        if str(index) in visible:
            return True
        uuids = [v for v in visible if v.startswith(("GPU-", "MIG-"))]
        if not uuids:
            return False
        uuid = self._nvml.nvmlDeviceGetUUID(handle)
        return (uuid.decode() if isinstance(uuid, bytes) else str(uuid)) in uuids

    def sample(self) -> list[GpuSample]:
        """The current readings (empty without NVML; a device that fails to answer is skipped)."""
        out = []
        for gpu, handle in self._handles:
            try:
                util = self._nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:  # a device lost or reset: report the others
                log.debug("GPU %s did not answer: %s", gpu, exc)
                continue
            out.append(GpuSample(gpu, float(util.gpu) / 100.0, int(memory.used)))
        return out

    def close(self) -> None:
        """Release NVML."""
        if self.available:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
