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


def _json(doc: object) -> bytes:
    body = json.dumps(doc, separators=(",", ":")).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


# The Open Inference Protocol v2 as Triton's perf_analyzer asks it (model "m": one INT32 [1] input and
# output): the model's metadata and Triton's config and statistics (read, not timed) and the inference
# answer (timed and recorded like any other request).
_TENSOR = {"datatype": "INT32", "shape": [1]}
_ID = re.compile(rb'"id":\s*"([^"]*)"')


def v2_answer(request_id: bytes) -> bytes:
    return _json({"id": request_id.decode(), "model_name": "m", "model_version": "1",
                  "outputs": [{"name": "OUTPUT0", **_TENSOR, "data": [0]}]})  # fmt: skip


V2_READS = {
    b"/v2/models/m": _json({"name": "m", "versions": ["1"], "platform": "python",
                            "inputs": [{"name": "INPUT0", **_TENSOR}], "outputs": [{"name": "OUTPUT0", **_TENSOR}]}),
    b"/v2/models/m/config": _json({"name": "m", "platform": "python", "backend": "python", "max_batch_size": 0,
                                   "input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": ["1"]}],
                                   "output": [{"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": ["1"]}]}),
    b"/v2/models/m/stats": _json({"model_stats": []}),
    b"/v2/models/stats": _json({"model_stats": []}),
    b"/v2/health/live": _json({}),
    b"/v2/health/ready": _json({}),
    b"/v2/models/m/ready": _json({}),
    b"/v2": _json({"name": "record_server", "version": "2.44.0", "extensions": []}),
}  # fmt: skip


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
        self.queue: collections.deque[tuple[Answer, float, bytes]] = collections.deque()
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
            line = buf[: buf.find(b"\r\n")]
            request_id = _ID.search(buf, i + 4, end) if line.startswith(b"POST /v2") else None
            buf = buf[end:]
            if line.startswith(b"GET /v2"):  # perf_analyzer's set-up reads: answered, not counted
                path = line.split(b" ")[1].split(b"?")[0].rstrip(b"/")
                assert self.transport is not None
                self.transport.write(V2_READS.get(path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
                continue
            if not line.startswith(b"POST /v2"):
                self.arrived(now, RESPONSE)
            else:  # an inference: the answer carries the request's id (perf_analyzer's async mode matches on it)
                self.arrived(now, v2_answer(request_id.group(1) if request_id else b""))
        self.buf = buf

    def arrived(self, now: float, response: bytes) -> None:
        st = self.state
        if st.first is None:
            st.first = now
        if st.kind == "fast":
            st.count += 1
            assert self.transport is not None
            self.transport.write(response)
        elif st.kind == "serial":
            st.queue.append((self, now, response))
            if not st.busy:
                serve_next(st)
        else:  # stall
            start = st.first + st.stall_at
            end = start + st.stall_s
            if start <= now < end:
                asyncio.get_running_loop().call_at(end, self.respond, now, response)
            else:
                self.respond(now, response)

    def respond(self, arrived: float, response: bytes) -> None:
        self.state.ms.append((time.monotonic() - arrived) * 1000)
        if self.transport is not None:
            self.transport.write(response)


def serve_next(st: State) -> None:
    if not st.queue:
        st.busy = False
        return
    st.busy = True
    conn, arrived, response = st.queue.popleft()

    def done() -> None:
        conn.respond(arrived, response)
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
