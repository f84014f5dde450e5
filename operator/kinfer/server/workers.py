"""gunicorn workers whose request reading has a deadline: a slow client cannot hold a worker.

A sync worker reads a request's head and body itself, blocking; a client that sends one byte a second
would hold it (and every request queued behind it) until gunicorn's ``--timeout`` killed the worker.
These workers hand gunicorn's parser a :class:`DeadlineSocket`: from the request's first read, the
client has ``--request-read-timeout`` seconds in all to deliver head and body. Past the deadline the
socket reads as closed: an unfinished head ends the connection as a client disconnect would, and an
unfinished body is answered 408 by the app (it sees ``timed_out`` on ``environ["gunicorn.socket"]``).

The cost on the fast path is one ``setsockopt`` per ``recv`` (a request usually needs one or two).
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker

log = logging.getLogger(__name__)

#: ``struct timeval`` (seconds, microseconds) as ``setsockopt(SO_RCVTIMEO)`` takes it.
_TIMEVAL = struct.Struct("@ll")


class DeadlineSocket:
    """A socket whose reads share one deadline, ``limit`` seconds after the first read since ``restart``.

    The deadline is the kernel's receive timeout (``SO_RCVTIMEO``), set to what remains before each
    ``recv``: the socket stays blocking, writes are untouched, and a read costs one ``setsockopt``
    more. Everything but ``recv``/``recv_into`` is the wrapped socket's own.
    """

    __slots__ = ("_deadline", "limit", "sock", "timed_out")

    def __init__(self, sock: socket.socket, limit: float) -> None:
        self.sock = sock
        self.limit = limit
        self._deadline = 0.0
        self.timed_out = False

    def restart(self) -> None:
        """A new request: its deadline starts at its first read."""
        self._deadline = 0.0
        self.timed_out = False

    def recv(self, size: int, flags: int = 0) -> bytes:
        if self.timed_out:
            return b""
        now = time.monotonic()
        if self._deadline == 0.0:
            self._deadline = now + self.limit
        remaining = self._deadline - now
        if remaining <= 0:
            return self._expired()
        sec = int(remaining)
        usec = max(int((remaining - sec) * 1e6), 1 if sec == 0 else 0)  # 0 s 0 us would mean "no timeout"
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(sec, usec))
        try:
            return self.sock.recv(size, flags)
        except (BlockingIOError, TimeoutError):  # EAGAIN from the kernel's receive timeout
            return self._expired()

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        data = self.recv(nbytes or len(buffer), flags)
        buffer[: len(data)] = data
        return len(data)

    def _expired(self) -> bytes:
        if not self.timed_out:
            self.timed_out = True
            log.info("client did not send a request within %g s (--request-read-timeout): stopped reading", self.limit)
        return b""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class DeadlineSyncWorker(SyncWorker):  # type: ignore[misc]
    """gunicorn's sync worker (one request per connection) with a deadline on reading each request."""

    #: seconds; set per worker by the ``post_fork`` hook (``--request-read-timeout``); 0 = no deadline.
    read_timeout: float = 0.0

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        if self.read_timeout > 0:
            super().handle(listener, DeadlineSocket(client, self.read_timeout), addr)
        else:
            super().handle(listener, client, addr)


class DeadlineThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker with the same deadline on each request of a (kept-alive) connection."""

    read_timeout: float = 0.0

    def handle(self, conn: Any) -> Any:
        if self.read_timeout > 0:
            if not isinstance(conn.sock, DeadlineSocket):
                conn.sock = DeadlineSocket(conn.sock, self.read_timeout)
            conn.sock.restart()
        return super().handle(conn)


def set_read_timeout(seconds: float, _server: Any, worker: Any) -> None:
    """gunicorn ``post_fork`` hook (bound with ``functools.partial``): the worker's read deadline."""
    worker.read_timeout = seconds
