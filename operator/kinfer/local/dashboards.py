"""One page for every experiment of a ``kinfer run``: links to each generator's dashboard and their live
numbers side by side (Locust's and the seed's one window per run, for several experiments at once).

Served on loopback beside the generators (``GET /``, and ``GET /api/experiments``: each experiment's
name, dashboard address and latest ``/api/status`` numbers, read from its generator when the page asks,
so nothing runs while nobody looks). The page holds no secret: it is opened as ``/#token=...`` and adds
the token of its own address to the links it draws, so each dashboard's controls work as when opened
directly. Read-only: it changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web

from kinfer.local.monitor import fetch_status

#: The numbers each row shows, as the generator's snapshot names them.
FIELDS = ("phase", "mode", "targetRPS", "concurrency", "realRPS", "realQPS", "p99Ms", "avg99thMs", "serviceRate",
          "sent", "errors", "dropped", "serverCPU", "serverMemoryMB", "serverGPUUtil", "serverGPUMemoryMB")  # fmt: skip


@dataclass(frozen=True)
class Listed:
    """One experiment on the page: its name and its generator's control API (which serves its dashboard)."""

    name: str
    control_url: str


def row(item: Listed, snapshot: dict[str, Any] | None) -> dict[str, Any]:
    """The page's row for one experiment (``phase`` "unreachable" while its generator does not answer)."""
    out: dict[str, Any] = {"name": item.name, "dashboard": item.control_url.rstrip("/") + "/"}
    if snapshot is None:
        return out | {"phase": "unreachable"}
    stage = snapshot.get("stage") or {}
    return out | {k: snapshot.get(k) for k in FIELDS} | {"stage": stage.get("index")}


class Overview:
    """The overview page's server (aiohttp, loopback)."""

    def __init__(self, experiments: Sequence[Listed]) -> None:
        self.experiments = list(experiments)
        self.app = web.Application()
        self.app.router.add_get("/", self.page)
        self.app.router.add_get("/api/experiments", self.rows)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Bind and serve; returns the page's address."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0))
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}/"
        return self.url

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def page(self, request: web.Request) -> web.Response:
        body = resources.files("kinfer.local").joinpath("overview.html").read_bytes()
        return web.Response(body=body, content_type="text/html")

    async def rows(self, request: web.Request) -> web.Response:
        assert self._session is not None
        session = self._session
        snapshots = await asyncio.gather(*(fetch_status(session, e.control_url) for e in self.experiments))
        return web.json_response({"experiments": [row(e, s) for e, s in zip(self.experiments, snapshots, strict=True)]})


async def start_overview(experiments: Sequence[Listed], token: str, console: Any) -> Overview | None:
    """With several experiments, serve the overview and print its address (with the token, on this
    user's own terminal, as ``kinfer run`` prints each dashboard's); ``None`` for a single experiment."""
    if len(experiments) < 2:
        return None
    overview = Overview(experiments)
    url = await overview.start()
    console.print(f"all {len(experiments)} experiments -> dashboard {url}#token={token}", soft_wrap=True)
    return overview
