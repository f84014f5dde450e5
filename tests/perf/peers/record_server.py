"""The generators' endpoint for the peer benchmark: answers HTTP/1.1 keep-alive requests and records what
each request spent inside it, from its arrival (its head read) to its response written.

    python tests/perf/peers/record_server.py PORT CPU MODE RECORD.json

MODE: ``fast`` (answers at once), ``serial:MS`` (one request at a time, ``MS`` each, in arrival order
across all connections: a one-at-a-time server of capacity 1000/MS per second), ``stall:AT:S`` (answers
at once, except that every response due from ``AT`` seconds after the first request until ``S`` seconds
later waits for the stall's end; requests keep being read and timed during the stall). On SIGTERM
it writes ``{"count": n, "ms": [...]}`` (per request, in completion order) to RECORD.json and exits;
``fast`` records only the count. Prints ``ready`` once listening. Requests may carry a
``Content-Length`` body; chunked request bodies are not expected.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import uvloop

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")


class State:
    def __init__(self, mode: str) -> None:
        kind, *args = mode.split(":")
        self.kind = kind
        self.service = float(args[0]) / 1000 if kind == "serial" else 0.0
        self.stall_at = float(args[0]) if kind == "stall" else 0.0
        self.stall_s = float(args[1]) if kind == "stall" else 0.0
        self.first: float | None = None
        self.count = 0
        self.ms: list[float] = []
        self.queue: collections.deque[tuple[Answer, float]] = collections.deque()
        self.busy = False


class Answer(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self.buf + data
        while True:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                break
            m = _LENGTH.search(buf, 0, i + 2)
            end = i + 4 + (int(m.group(1)) if m else 0)
            if len(buf) < end:
                break
            buf = buf[end:]
            self.arrived(now)
        self.buf = buf

    def arrived(self, now: float) -> None:
        st = self.state
        if st.first is None:
            st.first = now
        if st.kind == "fast":
            st.count += 1
            assert self.transport is not None
            self.transport.write(RESPONSE)
        elif st.kind == "serial":
            st.queue.append((self, now))
            if not st.busy:
                serve_next(st)
        else:  # stall
            start = st.first + st.stall_at
            end = start + st.stall_s
            if start <= now < end:
                asyncio.get_running_loop().call_at(end, self.respond, now)
            else:
                self.respond(now)

    def respond(self, arrived: float) -> None:
        self.state.ms.append((time.monotonic() - arrived) * 1000)
        if self.transport is not None:
            self.transport.write(RESPONSE)


def serve_next(st: State) -> None:
    if not st.queue:
        st.busy = False
        return
    st.busy = True
    conn, arrived = st.queue.popleft()

    def done() -> None:
        conn.respond(arrived)
        serve_next(st)

    asyncio.get_running_loop().call_later(st.service, done)


async def main(port: int, mode: str) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    state = State(mode)
    server = await loop.create_server(lambda: Answer(state), "127.0.0.1", port, backlog=4096)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    print("ready", flush=True)
    await stop
    server.close()
    return {"count": state.count + len(state.ms), "ms": state.ms}


if __name__ == "__main__":
    os.sched_setaffinity(0, {int(c) for c in sys.argv[2].split(",")})
    Path(sys.argv[4]).write_text(json.dumps(uvloop.run(main(int(sys.argv[1]), sys.argv[3]))))
