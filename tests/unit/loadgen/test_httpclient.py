"""The lean client's response parser, fed byte by byte and in one piece."""

from __future__ import annotations

from typing import Any

import pytest

from kinfer.loadgen.httpclient import Connection, ConnectionPool, Target


class FakeTransport:
    def __init__(self) -> None:
        self.closed = False
        self.aborted = False

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def write(self, data: bytes) -> None:
        pass

    def get_extra_info(self, name: str) -> Any:
        return None


def feed(response: bytes, step: int) -> tuple[list[tuple[Any, ...]], Connection, FakeTransport]:
    done: list[tuple[Any, ...]] = []
    pool = ConnectionPool(Target("http", "h", 80, "/", "127.0.0.1"), lambda *a: done.append(a), timeout=1.0)
    conn = Connection(pool)
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.start(1.0, 2.0, 3, b"GET / HTTP/1.1\r\n\r\n")
    pool._busy.add(conn)
    for i in range(0, len(response), step):
        conn.data_received(response[i : i + step])
    return done, conn, transport


CASES = {
    "content-length": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer-Timing: infer;dur=2\r\n\r\nhello", 200),
    "chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n",
        200,
    ),
    "chunked-trailers": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
        200,
    ),
    "no-content": (b"HTTP/1.1 204 No Content\r\n\r\n", 204),
    "interim": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\ncontent-length: 2\r\n\r\nno", 503),
    "empty": (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200),
}


@pytest.mark.parametrize("step", [1, 3, 1000])
@pytest.mark.parametrize("case", CASES)
def test_responses_complete_once_with_their_status(case: str, step: int) -> None:
    response, status = CASES[case]
    done, conn, transport = feed(response, step)
    assert len(done) == 1
    due, sent, stage, got, error, _, _ = done[0]
    assert (due, sent, stage, got) == (1.0, 2.0, 3, status)
    assert error == (None if status < 400 else f"http_{status}")
    assert not conn.busy
    assert not transport.closed  # keep-alive


def test_server_timing_header_is_passed_on() -> None:
    done, _, _ = feed(CASES["content-length"][0], 7)
    assert done[0][5] == "infer;dur=2"


def test_connection_close_closes_after_the_response() -> None:
    done, _, transport = feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 4)
    assert len(done) == 1
    assert transport.closed


def test_http10_without_length_reads_until_close() -> None:
    done, conn, _transport = feed(b"HTTP/1.0 200 OK\r\n\r\nsome body", 4)
    assert done == []
    conn.connection_lost(None)
    assert done[0][3] == 200


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (ConnectionResetError(), "reset"),
        (BrokenPipeError(), "reset"),
        (None, "closed"),
        (OSError(113, "x"), "connection"),
    ],
)
def test_connection_lost_mid_response_is_classified(exc: Exception | None, error: str) -> None:
    done, conn, _ = feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhal", 100)
    conn.connection_lost(exc)
    assert done[0][3:5] == (0, error)


def test_a_fresh_connection_closed_before_any_response_is_not_retried() -> None:
    done, conn, _ = feed(b"", 1)
    conn.connection_lost(None)
    assert done[0][3:5] == (0, "closed")
    assert conn.pool.retries == 0


def test_a_used_connection_closed_before_any_response_is_retried_once_keeping_its_times() -> None:
    done, conn, _ = feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 100)
    assert done[0][3] == 200 and conn.served == 1
    resent: list[tuple[bytes, float, float, int]] = []
    conn.pool._open = lambda data, due, sent, stage, retry: resent.append((data, due, sent, stage))  # type: ignore[method-assign]
    conn.start(5.0, 6.0, 1, b"POST / HTTP/1.1\r\n\r\n")
    conn.pool._busy.add(conn)
    conn.connection_lost(ConnectionResetError())
    assert resent == [(b"POST / HTTP/1.1\r\n\r\n", 5.0, 6.0, 1)]  # scheduled and dispatch times kept
    assert len(done) == 1 and conn.pool.retries == 1 and conn.pool.in_flight == 0
    # a retry that meets a closed connection again is a failure, not a second retry
    conn.start(5.0, 6.0, 1, b"POST / HTTP/1.1\r\n\r\n", retry=True)
    conn.pool._busy.add(conn)
    conn.connection_lost(None)
    assert done[1][3:5] == (0, "closed") and conn.pool.retries == 1


def test_garbage_is_a_protocol_error() -> None:
    done, _, transport = feed(b"SSH-2.0-OpenSSH\r\n\r\n", 100)
    assert done[0][4] == "protocol"
    assert transport.aborted
