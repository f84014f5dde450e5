"""Fixtures for the generator's app tests: a real target server on loopback, runs in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from kinfer.loadgen.cli import parse
from kinfer.loadgen.config import build_config
from kinfer.loadgen.runner import Run, serve
from tests.app.loadgen.support import TargetServer, eventually


@pytest.fixture
async def target() -> AsyncIterator[TargetServer]:
    server = TargetServer()
    await server.start()
    yield server
    await server.close()


class RunHandle:
    """A generator run started in this event loop, its control API already listening."""

    def __init__(self, task: asyncio.Task[Run], run: Run) -> None:
        self.task = task
        self.run = run

    def api(self, path: str) -> str:
        assert self.run.control_url is not None
        return self.run.control_url.rstrip("/") + path

    async def finished(self, within: float = 30) -> Run:
        return await asyncio.wait_for(self.task, within)


StartRun = Callable[..., Coroutine[Any, Any, RunHandle]]


@pytest.fixture
async def start_run(tmp_path: Path) -> AsyncIterator[StartRun]:
    """Start ``kinfer loadgen`` in-process with the given flags (control API on a free port)."""
    handles: list[RunHandle] = []

    async def start(*argv: str, output: bool = True, in_process: bool = True) -> RunHandle:
        args = [*argv, "--control-port", "0", "--control-host", "127.0.0.1", "--quiet"]
        if output:
            args += ["--output", str(tmp_path / "results")]
        run = Run(build_config(parse(args)), in_process=in_process)
        handle = RunHandle(asyncio.create_task(serve(run)), run)
        await eventually(lambda: run.control_url is not None or handle.task.done())
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        if not handle.task.done():
            handle.run.stop()
            handle.run.stop()
            await asyncio.wait_for(handle.task, 15)
