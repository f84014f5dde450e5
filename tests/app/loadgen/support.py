"""A real HTTP target for the generator's app tests: aiohttp on 127.0.0.1, port 0.

Behaviour is switched per test: a response delay, a stall (requests wait until released), a status
code, chunked bodies, ``Connection: close``. It counts what it received, so tests can compare the
generator's claims with what the server actually saw.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

SERVER_TIMING = "queue;dur=0.5, infer;dur=2.0, postprocess;dur=0.25"


class TargetServer:
    """The target: ``url(path)`` gives addresses; attributes change how it answers."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.status = 200
        self.chunked = False
        self.close_connection = False
        self.stall: asyncio.Event | None = None
        self.received = 0
        self.bodies: list[bytes] = []
        self.content_types: list[str] = []
        self.arrivals: list[float] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str = "/gpu") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received += 1
        self.arrivals.append(time.monotonic())
        body = await request.read()
        if body:
            self.bodies.append(body)
            self.content_types.append(request.headers.get("Content-Type", ""))
        if self.stall is not None:
            await self.stall.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        headers: dict[str, Any] = {"Server-Timing": SERVER_TIMING}
        if self.close_connection:
            headers["Connection"] = "close"
        if self.chunked:
            resp = web.StreamResponse(status=self.status, headers=headers)
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await resp.write(b"o")
            await resp.write(b"k" * 3000)
            await resp.write_eof()
            return resp
        return web.Response(status=self.status, text="ok", headers=headers)


async def eventually(predicate: Any, within: float = 10.0, every: float = 0.02) -> None:
    """Poll ``predicate`` until it is true or ``within`` seconds pass (then fail, naming it)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within}s: {getattr(predicate, '__name__', predicate)}")
        await asyncio.sleep(every)
