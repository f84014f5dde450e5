"""``kinfer serve`` under gunicorn against hostile clients: decompression bombs, slow senders, internal errors."""

from __future__ import annotations

import base64
import json
import select
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.app.server.conftest import Server, ServerFactory
from tests.app.server.test_serve_null import _metric
from tests.unit.server.test_limits import bomb_png


def _worker_pids(server: Server) -> list[int]:
    """The gunicorn workers: the children of the master process."""
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def _peak_rss_bytes(pid: int) -> int:
    """The process's high-water resident set size (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def test_six_png_bombs_in_one_v2_request_are_413_and_the_worker_peak_memory_stays_flat(serve: ServerFactory) -> None:
    server = serve("--format", "null", "--workers", "1")
    server.get("/gpu")
    (worker,) = _worker_pids(server)
    before = _peak_rss_bytes(worker)
    bomb = base64.b64encode(bomb_png(8000, 8000)).decode()
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [6], "data": [bomb] * 6}]}
    assert len(json.dumps(body)) < 600_000  # a 0.5 MB request ...
    resp = server.post("/v2/models/null/infer", json=body)
    assert resp.status_code == 413, resp.text
    assert "--max-pixels-per-request" in resp.json()["error"]
    grown = _peak_rss_bytes(worker) - before
    print(f"worker peak RSS {before / 2**20:.0f} MiB -> grew {grown / 2**20:.1f} MiB")
    assert grown < 32 * 2**20  # ... that would decode to 6 x 192 MB of pixels
    assert server.get("/gpu").text == "ok"


def _wait_workers_ready(server: Server, workers: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        text = requests.get(server.url + "/metrics", timeout=10, headers={"Connection": "close"}).text
        ready = sum(_metric(text, "kinfer_server_workers_ready"))
        if ready >= workers:
            return
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)


class SlowClient:
    """Sends a request one byte a second (``head_first``: the whole head at once, then the body slowly)."""

    def __init__(self, url: str, *, head_first: bool, multipart: bool = False) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.head_first = head_first
        self.content_type = b"multipart/form-data; boundary=xyz" if multipart else b"image/png"
        self.stop = threading.Event()
        self.answer = b""
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: " + self.content_type
        head += b"\r\nContent-Length: 1000\r\n\r\n"
        part = b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        data = head + (part if b"multipart" in self.content_type else b"") + b"\x89" * 1000
        try:
            if self.head_first:
                self.sock.sendall(head)
                data = data[len(head) :]
            for i in range(len(data)):
                if select.select([self.sock], [], [], 0)[0]:  # the server answered (or closed): stop
                    self.answer = self.sock.recv(4096)
                    break
                self.sock.sendall(data[i : i + 1])
                if self.stop.wait(1.0):
                    break
        except OSError:
            pass  # the server gave up on us: what we want
        self.stop.set()

    def start(self) -> None:
        self.thread.start()

    def close(self) -> bytes:
        """Stop sending; whatever the server answered."""
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        return self.answer


@pytest.mark.parametrize(
    ("workers", "threads", "slow", "head_first"),
    [(1, 1, 1, True), (1, 1, 1, False), (2, 1, 2, True), (1, 2, 2, True)],
    ids=["1-sync-worker-slow-body", "1-sync-worker-slow-head", "2-sync-workers-2-slow-bodies", "2-threads-2-slow"],
)
def test_clients_sending_one_byte_a_second_do_not_hold_workers_past_the_read_timeout(
    serve: ServerFactory, workers: int, threads: int, slow: int, head_first: bool
) -> None:
    server = serve(
        "--format", "null", "--workers", str(workers), "--threads", str(threads),
        "--request-read-timeout", "2", "--timeout", "60",
    )  # fmt: skip
    _wait_workers_ready(server, workers)
    clients = [SlowClient(server.url, head_first=head_first) for _ in range(slow)]
    for client in clients:
        client.start()
    time.sleep(0.5)  # let them reach the workers (a slower start only makes the check easier)
    started = time.monotonic()
    resp = requests.get(server.url + "/gpu", timeout=20, headers={"Connection": "close"})
    waited = time.monotonic() - started
    answers = [c.close() for c in clients]
    print(f"request beside {slow} slow client(s) answered in {waited:.2f} s")
    assert resp.text == "ok"
    assert waited < 4.0  # the read timeout (2 s) and some slack, not gunicorn's 60 s
    for answer in answers:
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
    assert "WORKER TIMEOUT" not in server.output()


@pytest.mark.parametrize("multipart", [False, True], ids=["raw-body", "multipart-upload"])
def test_a_slow_body_is_answered_408_naming_the_flag(serve: ServerFactory, multipart: bool) -> None:
    server = serve("--format", "null", "--request-read-timeout", "1")
    client = SlowClient(server.url, head_first=True, multipart=multipart)
    client.start()
    deadline = time.monotonic() + 10
    while not client.stop.is_set() and time.monotonic() < deadline:
        client.stop.wait(0.1)
    answer = client.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"--request-read-timeout" in answer
