"""Where generators run: in this process, or ``--processes N`` worker processes sharing the rate.

Both implement :class:`GeneratorGroup`. Workers are spawned (not forked: the parent already runs an
event loop), each runs a :class:`~kinfer.loadgen.engine.Generator` on ``1/N`` of the rate with its own
seed, and sends its interval snapshots through a pipe with histograms in HdrHistogram's encoding, so
the parent merges them exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Protocol

from kinfer.loadgen.engine import Generator, GeneratorSpec, Snapshot

#: Callback receiving (worker index, snapshot).
SnapshotSink = Callable[[int, Snapshot], None]


class GeneratorGroup(Protocol):
    """One or more generators driven together."""

    async def prepare(self) -> None:
        """Load payloads, start processes; return when ready to send."""

    async def run(self, t0: float) -> None:
        """Send from monotonic time ``t0`` until every generator has finished and reported."""

    def set_intensity(self, rps: float | None) -> None:
        """Override the total rate (``None``: back to the schedule)."""

    def stop(self) -> None:
        """Stop sending."""


def split_spec(spec: GeneratorSpec, n: int) -> list[GeneratorSpec]:
    """``n`` specs sharing ``spec``'s rate (or clients), request budget and in-flight limit, with distinct
    seeds and phases; with ``spec.cpus``, worker ``i`` is pinned to the ``i``-th CPU of the list
    (round-robin)."""
    out = []
    for i in range(n):
        budget = None
        if spec.requests is not None:
            budget = spec.requests // n + (1 if i < spec.requests % n else 0)
        out.append(
            dataclasses.replace(
                spec,
                share=1.0 / n,
                phase=i / n,
                seed=None if spec.seed is None else spec.seed + 1_000_003 * i,
                max_in_flight=max(1, -(-spec.max_in_flight // n)),
                cpus=(spec.cpus[i % len(spec.cpus)],) if spec.cpus else (),
                requests=budget,
                worker=i,
                workers=n,
            )
        )
    return out


class LocalGroup:
    """A single generator on the caller's event loop."""

    def __init__(self, spec: GeneratorSpec, sink: SnapshotSink) -> None:
        self.spec = spec
        self._sink = sink
        self.generator: Generator | None = None
        self._pending_intensity: tuple[float | None] | None = None
        self._stop_early = False

    async def prepare(self) -> None:
        self.generator = Generator(self.spec, lambda snap: self._sink(0, snap))
        if self._pending_intensity is not None:
            self.generator.set_intensity(self._pending_intensity[0])
        if self._stop_early:
            self.generator.stop()

    async def run(self, t0: float) -> None:
        assert self.generator is not None
        await self.generator.run(t0)

    def set_intensity(self, rps: float | None) -> None:
        if self.generator is None:
            self._pending_intensity = (rps,)
        else:
            self.generator.set_intensity(rps)

    def stop(self) -> None:
        self._stop_early = True
        if self.generator is not None:
            self.generator.stop()


def _worker_main(conn: Connection, spec: GeneratorSpec) -> None:
    """Body of a worker process: build the generator, wait for the start time, run, report.

    Ctrl-C in a terminal signals the whole process group: workers ignore SIGINT/SIGTERM and let the
    parent stop them through the pipe, so their last interval still reaches the results.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if spec.cpus:
        os.sched_setaffinity(0, spec.cpus)
    try:
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is in the loadgen extra
        runner = asyncio.run
    runner(_worker_async(conn, spec))


async def _worker_async(conn: Connection, spec: GeneratorSpec) -> None:
    loop = asyncio.get_running_loop()
    try:
        generator = Generator(spec, lambda snap: conn.send(("snapshot", snap.encode())))
    except Exception as exc:  # process boundary: report and end
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    started: asyncio.Future[float] = loop.create_future()
    # everything allocated so far (modules, payloads, the generator) lives for the whole run: keep it out
    # of the cyclic collector's full passes, which would otherwise stall sends for milliseconds
    gc.collect()
    gc.freeze()

    def on_message() -> None:
        try:
            kind, *args = conn.recv()
        except (EOFError, OSError):
            generator.stop()  # the parent is gone
            return
        if kind == "start" and not started.done():
            started.set_result(args[0])
        elif kind == "intensity":
            generator.set_intensity(args[0])
        elif kind == "stop":
            generator.stop()
            if not started.done():
                started.set_result(time.monotonic())

    loop.add_reader(conn.fileno(), on_message)
    conn.send(("ready",))
    t0 = await started
    try:
        await generator.run(t0)
    finally:
        conn.send(("done",))
        loop.remove_reader(conn.fileno())


class ProcessGroup:
    """``n`` worker processes, each sending ``1/n`` of the rate."""

    def __init__(self, spec: GeneratorSpec, n: int, sink: SnapshotSink) -> None:
        self.specs = split_spec(spec, n)
        self._sink = sink
        self._conns: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._ready: list[asyncio.Future[None]] = []
        self._done: list[asyncio.Future[None]] = []
        self._last_index: list[int] = [-1] * n
        self._final: list[bool] = [False] * n

    async def prepare(self) -> None:
        loop = asyncio.get_running_loop()
        ctx = multiprocessing.get_context("spawn")
        for i, spec in enumerate(self.specs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, spec), daemon=True, name=f"loadgen-{i}")
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
            self._ready.append(loop.create_future())
            self._done.append(loop.create_future())
            loop.add_reader(parent.fileno(), self._on_message, i)
        await asyncio.gather(*self._ready)

    def _on_message(self, i: int) -> None:
        try:
            kind, *args = self._conns[i].recv()
        except (EOFError, OSError):
            self._worker_gone(i, "worker process exited")
            return
        if kind == "snapshot":
            snap = Snapshot.decode(args[0])
            self._last_index[i] = snap.index
            self._final[i] = self._final[i] or snap.final
            self._sink(i, snap)
        elif kind == "ready":
            _resolve(self._ready[i])
        elif kind == "done":
            self._worker_gone(i, None)
        elif kind == "error":
            self._worker_gone(i, str(args[0]))

    def _worker_gone(self, i: int, error: str | None) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(self._conns[i].fileno())
        if not self._final[i]:
            # close the worker's stream so that the other workers' records are not held back
            self._final[i] = True
            self._sink(i, Snapshot(self._last_index[i] + 1, 0.0, 0.0, 0, final=True))
        for fut in (self._ready[i], self._done[i]):
            if not fut.done():
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(RuntimeError(f"generator process {i}: {error}"))

    async def run(self, t0: float) -> None:
        for conn in self._conns:
            conn.send(("start", t0))
        try:
            results = await asyncio.gather(*self._done, return_exceptions=True)
        finally:
            for proc in self._procs:
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()
            self._close_pipes()
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    def _close_pipes(self) -> None:
        """Close the pipes now: left to the garbage collector, a pipe would close its descriptor number
        whenever it is collected, by then perhaps reused by the next group's pipe (capacity mode starts
        one group per probe) or a results file."""
        loop = asyncio.get_running_loop()
        for conn in self._conns:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(conn.fileno())
            conn.close()

    def _send_all(self, message: tuple[Any, ...]) -> None:
        for i, conn in enumerate(self._conns):
            if not self._done[i].done():
                with contextlib.suppress(OSError):
                    conn.send(message)

    def set_intensity(self, rps: float | None) -> None:
        self._send_all(("intensity", rps))

    def stop(self) -> None:
        self._send_all(("stop",))


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
