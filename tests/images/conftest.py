"""The images tier: the images ``make images`` builds, run with podman.

``images`` builds them once per session through ``images/build.sh images`` (what ``make images`` runs;
podman's layer cache makes it a few seconds when ``make test`` has just built them), so the tests always
run the images of the current source. Podman missing is a failure that says how to get it, never a skip.
Containers get unique names and are removed by the fixture that started them, also when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSION: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
NAMES = ("operator", "model-server", "loadgen")
#: The extras each image installs (images/<name>/Dockerfile's requirements line).
EXTRAS = {"operator": ("operator",), "model-server": ("server", "tensorflow-cpu", "onnx"), "loadgen": ("loadgen",)}
UID = 10001
KINFER = [sys.executable, "-m", "kinfer.cli"]
#: Building all three from a fresh layer cache takes minutes (the model server's runtimes are ~1.5 GB).
BUILD_TIMEOUT_S = 1500


@pytest.fixture(scope="session")
def podman() -> str:
    path = shutil.which("podman")
    if path is None:
        pytest.fail("podman is not installed: `make images` installs it (apt-get install podman runc debootstrap)",
                    pytrace=False)
    return path


def head_revision() -> str:
    """The commit the images are labelled with (``org.opencontainers.image.revision``)."""
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


def build_sh(command: str, timeout_s: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
    """``images/build.sh COMMAND`` with podman, the default registry, base and version, and ``env`` on top."""
    base = {k: v for k, v in os.environ.items() if k not in ("REGISTRY", "BASE", "VERSION", "REVISION")}
    return subprocess.run([str(ROOT / "images" / "build.sh"), command], env={**base, "ENGINE": "podman", **env},
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def build_images(**env: str) -> str:
    """``images/build.sh images`` (what ``make images`` runs): its log; a failure fails the test with the tail."""
    result = build_sh("images", timeout_s=BUILD_TIMEOUT_S, **env)
    if result.returncode != 0:
        pytest.fail(f"images/build.sh images failed ({result.returncode}):\n{result.stderr[-6000:]}", pytrace=False)
    return result.stderr


@pytest.fixture(scope="session")
def images(podman: str) -> dict[str, str]:
    """``name -> tag`` of the three images, built (or found in podman's cache) by ``images/build.sh images``."""
    tags = build_sh("tags").stdout.split()
    assert tags == [f"kinfer/{name}:{VERSION}" for name in NAMES]
    build_images()
    return dict(zip(NAMES, tags, strict=True))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def podman_run(podman: str, *args: str, timeout_s: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``podman ARGS`` to completion: (rc, stdout, stderr) as text."""
    result = subprocess.run([podman, *args], capture_output=True, text=True, timeout=timeout_s, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


#: Flags of every container here: the host's network (the servers listen on free loopback ports; the
#: operator reaches the emulated API server on 127.0.0.1) and no systemd timer for HEALTHCHECK (there is
#: no systemd here; the tests run the check themselves with `podman healthcheck run`).
RUN_FLAGS = ("--network", "host", "--health-interval", "disable")


@dataclass
class Container:
    podman: str
    name: str

    def logs(self) -> str:
        result = podman_run(self.podman, "logs", self.name, check=False)
        return result.stdout + result.stderr

    def running(self) -> bool:
        result = podman_run(self.podman, "inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return result.stdout.strip() == "true"

    def wait(self, timeout_s: float) -> int:
        """The exit code, once the container has stopped (fails after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while self.running():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} still running after {timeout_s}s:\n{self.logs()[-4000:]}")
            time.sleep(0.2)
        code = podman_run(self.podman, "inspect", "--format", "{{.State.ExitCode}}", self.name).stdout.strip()
        return int(code)

    def healthcheck(self) -> subprocess.CompletedProcess[str]:
        """The image's HEALTHCHECK, run once now."""
        return podman_run(self.podman, "healthcheck", "run", self.name, check=False, timeout_s=30)


@pytest.fixture()
def container(podman: str) -> Iterator[Callable[..., Container]]:
    """``start(image, *args, flags=())``: a detached container, force-removed when the test ends."""
    started: list[Container] = []

    def start(image: str, *args: str, flags: tuple[str, ...] = ()) -> Container:
        name = f"kinfer-test-{uuid.uuid4().hex[:10]}"
        podman_run(podman, "run", "-d", "--name", name, *RUN_FLAGS, *flags, image, *args)
        started.append(Container(podman, name))
        return started[-1]

    yield start
    for ctr in started:
        podman_run(podman, "rm", "-f", "-t", "0", ctr.name, check=False)


def http_get(url: str, timeout_s: float = 5) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers); an HTTP error status is returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def http_post(url: str, data: bytes, timeout_s: float = 30) -> tuple[int, bytes, dict[str, str]]:
    """POST ``data``: (status, body, headers); an HTTP error status is returned, not raised."""
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "image/jpeg"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def wait_http(url: str, ctr: Container, timeout_s: float) -> bytes:
    """Poll ``url`` until it answers 200 (fails early if the container stops, late after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            status, body, _ = http_get(url, timeout_s=2)
            if status == 200:
                return body
            last = (status, body[:200])
        if not ctr.running():
            raise AssertionError(f"{ctr.name} exited before {url} answered:\n{ctr.logs()[-4000:]}")
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer 200 within {timeout_s}s (last: {last}):\n{ctr.logs()[-4000:]}")


def readable(path: Path) -> Path:
    """Let the images' non-root user (uid 10001) read ``path`` when mounted (pytest's dirs are 0700)."""
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight SSD-MobileNet (ONNX + frozen graph, its 8-image dataset), by ``kinfer model build``."""
    out = tmp_path_factory.mktemp("tiny-ssd") / "model"
    result = subprocess.run(
        [*KINFER, "model", "build", "ssd-mobilenet", "--tiny", "--no-savedmodel", "--output", str(out)],
        capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return readable(out)
