"""What ``kinfer run`` watches while experiments run: each generator's live snapshot.

The generator's ``GET /api/status`` is the same JSON snapshot the operator copies into the resource's
status. It carries the target server's resources too (``serverCPU``, ``serverMemoryMB``,
``serverGPUUtil``, ``serverGPUMemoryMB``): the generator scrapes the replicas' ``/metrics`` once per
record, as it does a cluster's pods, so local mode has no sampler of its own.
"""

from __future__ import annotations

from typing import Any

import aiohttp


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
