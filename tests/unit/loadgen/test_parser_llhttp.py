"""The generator's hand-written response parser (``kinfer.loadgen.httpclient.Connection``) against llhttp
(``httptools``, the parser behind uvicorn), over generated responses that llhttp accepts.

For every generated response (status, HTTP/1.0 or 1.1, headers in any case, ``Content-Length``,
chunked with extensions and trailers, or read until close, ``Connection`` either way, interim 1xx
responses before it) and a keep-alive sequence of such responses on one connection, each split at every
byte boundary, both parsers must agree: the status, whether the connection stays open, the
``Server-Timing`` value, and where the response ends (the hand-written parser completes on the last
byte, never before). tests/perf/bench_parser.py measures the two side by side.

The generator never pipelines (a connection carries one request at a time), so responses on one
connection arrive each after its request: bytes after a complete response in the same segment are
not a case here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kinfer.loadgen.httpclient import Connection, ConnectionPool, Target
from tests.unit.loadgen.test_httpclient import FakeTransport

httptools = pytest.importorskip("httptools")

TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
VALUE = st.text(alphabet="".join(chr(c) for c in range(0x21, 0x7F)) + " ", max_size=20).map(str.strip)
#: header names the parser frames or reports by: generated headers never take them
RESERVED = {"content-length", "transfer-encoding", "connection", "server-timing", "keep-alive", "upgrade"}


def _case(name: str, draw: st.DrawFn) -> str:
    style = draw(st.sampled_from(["lower", "title", "upper"]))
    return {"lower": name.lower(), "title": name.title(), "upper": name.upper()}[style]


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    """One response llhttp may accept (it is checked by :func:`llhttp` before use)."""
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.0"]))
    status = draw(st.sampled_from([200, 201, 204, 206, 301, 304, 400, 404, 429, 500, 503]))
    headers: list[tuple[str, str]] = []
    for name, value in draw(st.lists(st.tuples(TOKEN, VALUE), max_size=4)):
        if name not in RESERVED:
            headers.append((_case(name, draw), value))
    if draw(st.booleans()):
        timing = draw(st.sampled_from(["infer;dur=2.5", "queue;dur=0.1, preprocess;dur=0.6, infer;dur=28.1", "x"]))
        headers.insert(draw(st.integers(0, len(headers))), (_case("server-timing", draw), timing))
    connection = draw(st.sampled_from([None, "close", "keep-alive", "Keep-Alive", "CLOSE"]))
    if connection is not None:
        headers.insert(draw(st.integers(0, len(headers))), (_case("connection", draw), connection))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    if version == b"1.0" and framing == "chunked":
        framing = "length"
    body = b""
    if status in (204, 304):
        framing = "none"
    elif framing == "length":
        data = draw(st.binary(max_size=40))
        headers.append((_case("content-length", draw), str(len(data))))
        body = data
    elif framing == "chunked":
        headers.append((_case("transfer-encoding", draw), "chunked"))
        for chunk in draw(st.lists(st.binary(min_size=1, max_size=20), max_size=3)):
            size = format(len(chunk), draw(st.sampled_from(["x", "X"])))
            ext = draw(st.sampled_from([b"", b";a=1", b";name"]))
            body += size.encode() + ext + b"\r\n" + chunk + b"\r\n"
        body += b"0\r\n"
        for name, value in draw(st.lists(st.tuples(TOKEN, VALUE), max_size=2)):
            if name not in RESERVED:
                body += f"{name}: {value}\r\n".encode()
        body += b"\r\n"
    else:  # read until close
        body = draw(st.binary(max_size=30))
    head = f"HTTP/{version.decode()} {status} {draw(st.sampled_from(['OK', 'Whatever', '']))}\r\n"
    head += "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" if version == b"1.1" and draw(st.booleans()) else b""
    return interim + head.encode() + body


@dataclass
class Parsed:
    status: int
    keep: bool
    timing: str | None
    #: bytes up to and including the final response's last byte (None: it ends with the connection)
    end: int | None


class _Llhttp:
    """llhttp's reading of a response: its callbacks, as uvicorn's protocol takes them."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.timing: str | None = None
        self.headers_done = False
        self.done_at: int | None = None
        self.keep = False
        self._fed = 0
        self._interim = False

    def on_message_begin(self) -> None:
        self.timing = None
        self.headers_done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"server-timing":
            self.timing = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self._interim = 100 <= self.status < 200
        self.headers_done = not self._interim

    def on_message_complete(self) -> None:
        if not self._interim and self.done_at is None:
            self.keep = self.parser.should_keep_alive()
            self.done_at = self._fed

    def feed(self, data: bytes) -> None:
        # byte by byte, so that the message's end is known to the byte
        for i in range(len(data)):
            self._fed += 1
            self.parser.feed_data(data[i : i + 1])
            if self.done_at is not None:
                return


def llhttp(response: bytes) -> Parsed | None:
    """llhttp's reading, or None where llhttp refuses the bytes (such inputs are not generated cases)."""
    ref = _Llhttp()
    try:
        ref.feed(response)
    except httptools.HttpParserError:
        return None
    if ref.done_at is not None:
        if ref.done_at != len(response):
            return None  # it ended early: the generator made something else than one response
        return Parsed(ref.status, ref.keep, ref.timing, ref.done_at)
    if not ref.headers_done:
        return None
    return Parsed(ref.status, False, ref.timing, None)  # body until the connection closes


class Client:
    """kinfer's Connection on a fake transport, recording its completions."""

    def __init__(self) -> None:
        self.done: list[tuple[Any, ...]] = []
        self.pool = ConnectionPool(Target("http", "h", 80, "/", "127.0.0.1"), self._on_done, timeout=1.0)
        self.conn = Connection(self.pool)
        self.transport = FakeTransport()
        self.conn.connection_made(self.transport)  # type: ignore[arg-type]

    def _on_done(self, *args: Any) -> None:
        self.done.append(args)

    def start(self) -> None:
        self.conn.start(1.0, 2.0, 0, b"GET / HTTP/1.1\r\n\r\n")
        self.pool._busy.add(self.conn)


def check_one(client: Client, response: bytes, want: Parsed, cut: int) -> None:
    """Feed ``response`` in two pieces at ``cut`` and compare with llhttp's reading."""
    before = len(client.done)
    client.start()
    client.conn.data_received(response[:cut])
    if cut < len(response):
        assert len(client.done) == before, f"completed early at byte {cut} of {len(response)}: {response!r}"
        client.conn.data_received(response[cut:])
    if want.end is None:
        assert len(client.done) == before, response
        client.conn.connection_lost(None)
    assert len(client.done) == before + 1, f"cut {cut}: {response!r}"
    _due, _sent, _stage, status, error, timing, _ = client.done[-1]
    assert status == want.status, response
    assert error == (None if status < 400 else f"http_{status}")
    assert timing == want.timing, response
    keep = not client.transport.closed and not client.transport.aborted
    assert keep == want.keep, f"keep-alive {keep}, llhttp {want.keep}: {response!r}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(responses())
def test_one_response_split_at_every_byte_parses_as_llhttp_does(response: bytes) -> None:
    want = llhttp(response)
    assume(want is not None)
    assert want is not None
    for cut in range(len(response) + 1):
        check_one(Client(), response, want, cut)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(responses(), min_size=2, max_size=4))
def test_keep_alive_sequence_split_at_every_byte_parses_as_llhttp_does(sequence: list[bytes]) -> None:
    """Responses one after another on one kept-alive connection (each after its request), each split at
    every byte boundary, the connection reused as long as both parsers keep it open."""
    wants = [llhttp(r) for r in sequence]
    assume(all(w is not None for w in wants))
    for cut_frac in (0.0, 0.3, 0.5, 0.9, 1.0):
        client = Client()
        for response, want in zip(sequence, wants, strict=True):
            assert want is not None
            check_one(client, response, want, round(cut_frac * len(response)))
            if not want.keep:
                break
    # and every boundary of each response, on a connection that served the others first
    client = Client()
    for response, want in zip(sequence, wants, strict=True):
        assert want is not None
        if not want.keep:
            break
        for cut in range(len(response) + 1):
            check_one(client, response, want, cut)


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nServer-Timing: infer;dur=2\r\n\r\nuntil close",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    ],
)
def test_known_cases_parse_as_llhttp_does(response: bytes) -> None:
    want = llhttp(response)
    assert want is not None
    for cut in range(len(response) + 1):
        check_one(Client(), response, want, cut)
