"""A fast HTTP/1.1 keep-alive endpoint for the load generator benchmark (answers in microseconds).

``python tests/perf/loadgen_target.py PORT [CPU]``: asyncio protocols on uvloop, a fixed 200 response per
request (pipelining-safe), pinned to CPU when given. Prints ``ready`` once listening.
"""

from __future__ import annotations

import asyncio
import os
import sys

import uvloop

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class Answer(asyncio.Protocol):
    """Answers each complete request head (bodies are not expected) with ``RESPONSE``."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        n = buf.count(b"\r\n\r\n")
        if n:
            assert self.transport is not None
            self.transport.write(RESPONSE * n)
            buf = buf[buf.rfind(b"\r\n\r\n") + 4 :]
        self.buf = buf


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Answer, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) > 2:
        os.sched_setaffinity(0, {int(c) for c in sys.argv[2].split(",")})
    uvloop.run(main(int(sys.argv[1])))
