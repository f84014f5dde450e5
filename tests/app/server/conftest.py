"""Run the real ``kinfer serve`` (gunicorn) as a subprocess on a free loopback port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

LISTENING = re.compile(r"kinfer serve: listening on (http://127\.0\.0\.1:\d+)")
KINFER = [sys.executable, "-m", "kinfer.cli"]


@dataclass
class Server:
    """A running ``kinfer serve``: its URL, process, and everything it printed so far."""

    proc: subprocess.Popen[str]
    url: str = ""
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def output(self) -> str:
        return "".join(self.lines)

    def get(self, path: str, **kwargs: object) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, **kwargs: object) -> requests.Response:
        return requests.post(self.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Poll ``/v2/health/ready`` until 200; fail with the server's output on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if self.get("/v2/health/ready").status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready in {timeout}s:\n{self.output()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (gunicorn's graceful shutdown); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.close()
        return code

    def close(self) -> None:
        if self.reader is not None:
            self.reader.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def _pump(server: Server, found: threading.Event) -> None:
    assert server.proc.stderr is not None
    for line in server.proc.stderr:
        server.lines.append(line)
        match = LISTENING.search(line)
        if match and not server.url:
            server.url = match.group(1)
            found.set()
    found.set()


def start_server(args: list[str], env: dict[str, str] | None = None, timeout: float = 60.0) -> Server:
    """Start ``kinfer serve ARGS --host 127.0.0.1 --port 0`` and wait until it listens."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    proc = subprocess.Popen(
        [*KINFER, "serve", *args, "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )
    server = Server(proc)
    found = threading.Event()
    server.reader = threading.Thread(target=_pump, args=(server, found), daemon=True)
    server.reader.start()
    if not found.wait(timeout) or not server.url:
        proc.kill()
        proc.wait()
        server.close()
        raise AssertionError(f"kinfer serve did not start:\n{server.output()}")
    return server


ServerFactory = Callable[..., Server]


@pytest.fixture
def serve() -> Iterator[ServerFactory]:
    """Start servers; each is stopped (SIGTERM, then kill) at the end of the test."""
    servers: list[Server] = []

    def factory(*args: str, ready: bool = True, env: dict[str, str] | None = None) -> Server:
        server = start_server(list(args), env)
        servers.append(server)
        if ready:
            server.wait_ready()
        return server

    yield factory
    for server in servers:
        try:
            server.stop()
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
            server.close()


def build_model(name: str, out: Path, *extra: str) -> Path:
    """``kinfer model build NAME --output OUT`` in a subprocess (TensorFlow stays out of pytest)."""
    result = subprocess.run(
        [*KINFER, "model", "build", name, "--output", str(out), *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out
