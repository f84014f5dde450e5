"""A target that misbehaves on purpose: raw HTTP/1.1 on asyncio streams, loopback, port 0.

``mode`` decides what each request gets:

- ``ok``: 200 after ``delay`` seconds, the connection kept alive;
- ``flaky``: like ``ok``, but every other request is answered 503;
- ``reset``: the request is read, then the connection is reset (RST, no answer);
- ``close``: the request is read, then the connection is closed (FIN, no answer);
- ``race``: the first request of each connection is answered (kept alive); the connection is closed,
  unanswered, as its second request arrives: what a client sees when the server's keep-alive timer
  closes a connection just as a request is written to it.
"""

from __future__ import annotations

import asyncio
import socket
import struct


class FaultyTarget:
    """Counts connections, requests read, and requests answered."""

    def __init__(self, mode: str = "ok", delay: float = 0.0) -> None:
        self.mode = mode
        self.delay = delay
        self.connections = 0
        self.requests = 0
        self.answered = 0
        self.unanswered = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def url(self, path: str = "/gpu") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                self.requests += 1
                if self.mode == "reset":
                    self._reset(writer)
                    return
                if self.mode == "close" or (self.mode == "race" and served >= 1):
                    self.unanswered += 1
                    writer.close()
                    return
                if self.delay:
                    await asyncio.sleep(self.delay)
                status = b"503 Busy" if self.mode == "flaky" and self.requests % 2 == 0 else b"200 OK"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
                await writer.drain()
                self.answered += 1
                served += 1
        finally:
            if not writer.is_closing():
                writer.close()

    def _reset(self, writer: asyncio.StreamWriter) -> None:
        self.unanswered += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
