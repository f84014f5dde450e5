"""Child processes of ``kinfer run``: started in their own process group, always stopped as a group.

Every child is a ``kinfer serve`` (gunicorn master + workers) or ``kinfer loadgen``; stopping sends
SIGTERM to the whole group (gunicorn and the generator both shut down gracefully and flush on it) and
SIGKILL after a grace period, so that nothing is left behind even when a child hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp


@dataclass
class Child:
    """One supervised process and the tail of its output (for error messages)."""

    label: str
    proc: asyncio.subprocess.Process
    log_path: Path
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    @property
    def pid(self) -> int:
        """The process id (also its process-group id)."""
        return self.proc.pid

    @property
    def running(self) -> bool:
        """Still alive."""
        return self.proc.returncode is None

    def output_tail(self) -> str:
        """The last lines the process wrote."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-12:]
        except OSError:
            lines = []
        return "\n".join(lines)


async def start(label: str, argv: list[str], env: dict[str, str], log_path: Path) -> Child:
    """Start ``argv`` in a new session (its own process group), output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
    return Child(label, proc, log_path)


def _signal_group(child: Child, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


async def stop(child: Child, grace_s: float = 10.0) -> int | None:
    """SIGTERM the child's group, SIGKILL it after ``grace_s``; return the exit code."""
    if child.running:
        _signal_group(child, signal.SIGTERM)
        try:
            await asyncio.wait_for(child.proc.wait(), grace_s)
        except TimeoutError:
            _signal_group(child, signal.SIGKILL)
            await child.proc.wait()
    # Workers whose master died first would be orphaned in the group: make sure none survive.
    _signal_group(child, signal.SIGKILL)
    return child.proc.returncode


async def wait_http_ok(url: str, child: Child, timeout_s: float) -> None:
    """Poll ``url`` until it answers 200; raise ``RuntimeError`` if the child dies or time runs out."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            if not child.running:
                raise RuntimeError(
                    f"{child.label} exited with code {child.proc.returncode} before it was ready:\n"
                    f"{child.output_tail()}"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
                    body = await resp.json(content_type=None) if resp.status == 503 else None
                    if isinstance(body, dict) and body.get("error"):  # it will never be ready: stop waiting
                        raise RuntimeError(f"{child.label} cannot become ready: {body['error']}")
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"{child.label} not ready at {url} after {timeout_s:.0f} s")
            await asyncio.sleep(0.2)
