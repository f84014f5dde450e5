"""A local stand-in for the Service in front of several replicas: each request to one replica chosen
uniformly at random (seed 004's balancing), streamed through unchanged (status, headers, body)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import aiohttp
from aiohttp import web

#: Headers that belong to one connection and must not be forwarded (RFC 9110 §7.6.1).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "host", "content-length"}
)  # fmt: skip


class RandomBalancer:
    """An aiohttp proxy over ``backends``; ``counts[i]`` is how many requests replica ``i`` got."""

    def __init__(self, backends: Sequence[str], seed: int | None = None) -> None:
        self.backends = list(backends)
        self.counts = [0] * len(self.backends)
        self._random = random.Random(seed)
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        index = self._random.randrange(len(self.backends))
        self.counts[index] += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        try:
            async with self._session.request(
                request.method, self.backends[index] + request.rel_url.raw_path_qs, headers=headers, data=body
            ) as upstream:
                payload = await upstream.read()
                out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                return web.Response(status=upstream.status, body=payload, headers=out_headers)
        except aiohttp.ClientError as exc:
            return web.json_response({"error": f"replica {index} unreachable: {exc}"}, status=502)

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``."""
        connector = aiohttp.TCPConnector(limit=0)
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def close(self) -> None:
        """Stop listening and close upstream connections."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
