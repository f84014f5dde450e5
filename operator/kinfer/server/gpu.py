"""Which GPUs this process sees and how much memory they have, without importing a framework.

GPU pinning is done by whoever starts the server through ``CUDA_VISIBLE_DEVICES``; the server only
logs what it sees and derives per-process memory caps (``--memory-fraction``) from the totals.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    """One visible GPU: its index as the process sees it (after CUDA_VISIBLE_DEVICES) and memory."""

    index: int
    name: str
    total_bytes: int


def visible_gpus() -> list[Gpu]:
    """The GPUs this process may use, in the order CUDA numbers them; empty without nvidia-smi."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    physical: dict[str, tuple[str, int]] = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[2].isdigit():
            physical[parts[0]] = (parts[1], int(parts[2]) * 1024 * 1024)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    order = list(physical) if visible is None else [d.strip() for d in visible.split(",") if d.strip()]
    return [Gpu(i, physical[dev][0], physical[dev][1]) for i, dev in enumerate(order) if dev in physical]


def describe() -> str:
    """A log line naming the devices this process sees."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible_gpus()
    seen = ", ".join(f"{g.index}:{g.name} ({g.total_bytes // 2**20} MiB)" for g in gpus) or "none (CPU)"
    return f"CUDA_VISIBLE_DEVICES={env if env is not None else '<unset>'}; GPUs: {seen}"
