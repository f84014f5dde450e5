"""A lean HTTP/1.1 keep-alive client on asyncio protocols, for the generator's hot path.

aiohttp's client costs a coroutine, a task and several objects per request; at thousands of requests
per second on one core that overhead would become the latency being measured. Here a request is one
``transport.write`` of precomputed bytes on an idle connection, and the response is parsed in
``data_received`` (status line, ``Content-Length`` or chunked bodies, ``Connection: close``,
read-until-close) with a completion callback — no per-request task or timer. Timeouts are enforced by
one periodic sweep over busy connections. A request that finds no idle connection opens a new one
(counted in its service time); closed or failed connections leave the pool and are replaced on demand.

Failures are classified where they happen: ``connection`` (no connection could be opened), ``reset``
(the peer reset the connection or it broke while writing), ``closed`` (the server closed it before a
whole response), ``timeout``, ``protocol`` (not HTTP/1.x), ``http_<status>``. A kept-alive connection
the server closed just as a request was written to it (the keep-alive race: nothing of a response
came back) is not the request's fault: the request is sent once more on a new connection, keeping its
scheduled and first-dispatch times, so its latency still counts from the schedule and its service
time from the first send. A request is retried at most once, and never when it went out on a fresh
connection.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

#: done(due, sent, stage, status, error_class, server_timing, completed_at); status 0 on failure.
DoneCallback = Callable[[float, float, int, int, str | None, str | None, float], None]

MAX_HEAD = 64 * 1024

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _TRAILERS, _UNTIL_CLOSE = range(6)


@dataclass(frozen=True)
class Target:
    """Where requests go: ``address`` is what we connect to, ``host_header`` what we call it."""

    scheme: str
    host: str
    port: int
    path: str
    address: str

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def _header(lower: bytes, head: bytes, name: bytes) -> bytes | None:
    """Value of header ``name`` (lower-case, with its ``\\r\\n`` prefix and colon) from a response head."""
    i = lower.find(name)
    if i < 0:
        return None
    start = i + len(name)
    end = lower.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)].strip()


def lost_class(exc: Exception | None) -> str:
    """The error class of a connection lost mid-request: ``closed`` (the peer's FIN), ``reset``, or ``connection``."""
    if exc is None:
        return "closed"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    return "connection"


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying at most one request at a time (no pipelining)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.busy = False
        self.due = 0.0
        self.sent = 0.0
        self.stage = 0
        #: The request on the wire (kept for one retry after a keep-alive race).
        self.data = b""
        #: Responses completed on this connection: a request on a used connection may meet the race.
        self.served = 0
        #: Whether the current request already is a retry (then it is never retried again).
        self.retry = False
        self._buf = bytearray()
        self._state = _HEAD
        self._remaining = 0
        self._status = 0
        self._keep = True
        self._timing: str | None = None

    # -- requests -------------------------------------------------------------------------------

    def start(self, due: float, sent: float, stage: int, data: bytes, *, retry: bool = False) -> None:
        """Mark the connection busy with request ``data`` scheduled at ``due`` and dispatched at ``sent``."""
        self.busy = True
        self.due = due
        self.sent = sent
        self.stage = stage
        self.data = data
        self.retry = retry
        self._state = _HEAD
        self._buf.clear()

    def write(self, data: bytes) -> None:
        """Put the request on the wire."""
        assert self.transport is not None
        self.transport.write(data)

    def fail(self, error: str) -> None:
        """End the current request with an error and drop the connection."""
        if not self.busy:
            return
        self.busy = False
        self.pool._release(self, keep=False)
        self.pool.on_done(self.due, self.sent, self.stage, 0, error, None, time.monotonic())
        if self.transport is not None:
            self.transport.abort()
        elif self.connect_task is not None:
            self.connect_task.cancel()

    def _complete(self) -> None:
        now = time.monotonic()
        self.busy = False
        self.served += 1
        self._state = _HEAD
        keep = self._keep
        self.pool._release(self, keep=keep)
        status = self._status
        error = None if 200 <= status < 400 else f"http_{status}"
        self.pool.on_done(self.due, self.sent, self.stage, status, error, self._timing, now)
        if not keep and self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool._forget(self)
        if self.busy:
            if self._state == _UNTIL_CLOSE:
                self._complete()
            elif self._state == _HEAD and not self._buf and self.served and not self.retry:
                # the keep-alive race: the server had closed this connection as the request went out
                self.busy = False
                self.pool._busy.discard(self)
                self.pool.resend(self.data, self.due, self.sent, self.stage)
            else:
                self.fail(lost_class(exc))
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            # bytes nobody asked for: the connection is out of step, do not reuse it
            if self.transport is not None:
                self.transport.abort()
            return
        buf = self._buf
        buf += data
        while True:
            state = self._state
            if state == _HEAD:
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    if len(buf) > MAX_HEAD:
                        self.fail("protocol")
                    return
                head = bytes(buf[:i])
                del buf[: i + 4]
                if not self._parse_head(head):
                    return
            elif state in (_LENGTH, _CHUNK_DATA):
                n = len(buf)
                if n < self._remaining:
                    self._remaining -= n
                    buf.clear()
                    return
                del buf[: self._remaining]
                if state == _LENGTH:
                    self._complete()
                    return
                self._state = _CHUNK_SIZE
            elif state == _CHUNK_SIZE:
                i = buf.find(b"\r\n")
                if i < 0:
                    return
                try:
                    size = int(bytes(buf[:i]).split(b";", 1)[0], 16)
                except ValueError:
                    self.fail("protocol")
                    return
                del buf[: i + 2]
                if size == 0:
                    self._state = _TRAILERS
                else:
                    self._remaining = size + 2
                    self._state = _CHUNK_DATA
            elif state == _TRAILERS:
                if buf[:2] == b"\r\n":
                    self._complete()
                    return
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    return
                self._complete()
                return
            else:  # _UNTIL_CLOSE
                buf.clear()
                return

    def _parse_head(self, head: bytes) -> bool:
        """Read the status line and the headers that frame the body; False when the request ended."""
        if not head.startswith(b"HTTP/1.") or len(head) < 12:
            self.fail("protocol")
            return False
        try:
            status = int(head[9:12])
        except ValueError:
            self.fail("protocol")
            return False
        if 100 <= status < 200:
            return True  # interim response: the real one follows
        lower = head.lower()
        self._status = status
        connection = _header(lower, lower, b"\r\nconnection:")
        if head[7:8] == b"0":
            self._keep = connection is not None and b"keep-alive" in connection
        else:
            self._keep = connection is None or b"close" not in connection
        timing = _header(lower, head, b"\r\nserver-timing:")
        self._timing = timing.decode("latin-1") if timing is not None else None
        if status in (204, 304):
            self._complete()
            return False
        te = _header(lower, lower, b"\r\ntransfer-encoding:")
        if te is not None and b"chunked" in te:
            self._state = _CHUNK_SIZE
            return True
        length = _header(lower, lower, b"\r\ncontent-length:")
        if length is not None:
            try:
                self._remaining = int(length)
            except ValueError:
                self.fail("protocol")
                return False
            if self._remaining == 0:
                self._complete()
                return False
            self._state = _LENGTH
            return True
        self._keep = False
        self._state = _UNTIL_CLOSE
        return True


class ConnectionPool:
    """Idle and busy connections to one target; ``in_flight`` is the number of busy ones."""

    def __init__(self, target: Target, on_done: DoneCallback, *, timeout: float) -> None:
        self.target = target
        self.on_done = on_done
        self.timeout = timeout
        self._idle: list[Connection] = []
        self._busy: set[Connection] = set()
        #: Requests sent a second time after a keep-alive race.
        self.retries = 0
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if target.scheme == "https" else None

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered, failed or timed out."""
        return len(self._busy)

    def send(self, data: bytes, due: float, stage: int) -> float:
        """Dispatch one request scheduled at ``due``; return the dispatch time (monotonic seconds)."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            transport = conn.transport
            if transport is None or transport.is_closing():
                continue
            sent = time.monotonic()
            conn.start(due, sent, stage, data)
            self._busy.add(conn)
            transport.write(data)
            return sent
        sent = time.monotonic()
        self._open(data, due, sent, stage, retry=False)
        return sent

    def resend(self, data: bytes, due: float, sent: float, stage: int) -> None:
        """Send a request once more, on a new connection, keeping its scheduled and dispatch times."""
        self.retries += 1
        self._open(data, due, sent, stage, retry=True)

    def _open(self, data: bytes, due: float, sent: float, stage: int, *, retry: bool) -> None:
        conn = Connection(self)
        conn.start(due, sent, stage, data, retry=retry)
        self._busy.add(conn)
        conn.connect_task = asyncio.get_running_loop().create_task(self._connect(conn, data))

    async def _connect(self, conn: Connection, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {}
        if self._ssl is not None:
            kwargs = {"ssl": self._ssl, "server_hostname": self.target.host}
        try:
            await loop.create_connection(lambda: conn, self.target.address, self.target.port, **kwargs)
        except asyncio.CancelledError:
            return  # timed out (already counted) or shutting down
        except (OSError, ssl.SSLError):
            conn.fail("connection")
            return
        finally:
            conn.connect_task = None
        if conn.busy:
            conn.write(data)
        elif conn.transport is not None:
            conn.transport.abort()

    def sweep(self, now: float) -> None:
        """Time out requests older than ``timeout`` (called periodically by the engine)."""
        limit = now - self.timeout
        expired = [c for c in self._busy if c.sent < limit]
        for conn in expired:
            conn.fail("timeout")

    def abort_all(self, error: str) -> None:
        """End every busy request with ``error`` (used when a stopped run stops waiting)."""
        for conn in list(self._busy):
            conn.fail(error)

    def close(self) -> None:
        """Close every connection."""
        for conn in list(self._busy) + self._idle:
            if conn.transport is not None:
                conn.transport.close()
            elif conn.connect_task is not None:
                conn.connect_task.cancel()
        self._idle.clear()
        self._busy.clear()

    def _release(self, conn: Connection, *, keep: bool) -> None:
        self._busy.discard(conn)
        if keep and conn.transport is not None and not conn.transport.is_closing():
            self._idle.append(conn)

    def _forget(self, conn: Connection) -> None:
        if conn in self._idle:
            self._idle.remove(conn)
