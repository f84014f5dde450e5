"""Dynamic batching inside one worker: concurrent requests of its threads share one model call.

Requests ``submit`` their pre-processed rows and block; one batching thread takes the first waiting
request, gathers more until ``max_batch_size`` rows or ``max_delay`` after the first arrived, runs the
model once on the stacked rows and hands every request its own rows back. Requests announce
themselves (``expecting``) before they decode their image, so the batcher waits only while another
request is actually on its way: a lone request at low load runs at once instead of paying the delay.
``max_batch_size`` 1 turns batching off: the request thread calls the model itself, with no hand-over.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np

from kinfer.server.backends.base import Batch, Outputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchResult:
    """One request's share of a model call and how long it waited and ran (seconds)."""

    outputs: Outputs
    queue_s: float
    infer_s: float
    batch_size: int


@dataclass
class _Job:
    rows: Batch
    enqueued: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    result: BatchResult | None = None
    error: BaseException | None = None


class Batcher:
    """Runs ``model`` on batches of at most ``max_batch_size`` rows, waiting at most ``max_delay_s``.

    ``on_batch`` is told the size of every model call (for the batch-size histogram).
    """

    def __init__(
        self,
        model: Callable[[Batch], Outputs],
        max_batch_size: int = 1,
        max_delay_s: float = 0.005,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._model = model
        self.max_batch_size = max(1, max_batch_size)
        self.max_delay_s = max(0.0, max_delay_s)
        self._on_batch = on_batch
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._carry: _Job | None = None
        self._expected = 0
        self._expected_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if self.max_batch_size > 1:
            self._thread = threading.Thread(target=self._loop, name="kinfer-batcher", daemon=True)
            self._thread.start()

    def submit(self, rows: Batch) -> BatchResult:
        """Run ``rows`` (leading axis = images) through the model, batched with concurrent callers."""
        if self._thread is None:
            return self._direct(rows)
        job = _Job(rows)
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def expecting(self) -> AbstractContextManager[None]:
        """Announce a request that will ``submit`` soon (wrap its decoding and its submit).

        With batching off nobody waits for announced requests, so there is nothing to count.
        """
        return self._announced() if self._thread is not None else nullcontext()

    @contextmanager
    def _announced(self) -> Iterator[None]:
        with self._expected_lock:
            self._expected += 1
        try:
            yield
        finally:
            with self._expected_lock:
                self._expected -= 1

    def _others_coming(self, gathered: int) -> bool:
        """Whether announced requests are not yet in the batch (unannounced callers count as 1)."""
        with self._expected_lock:
            return self._expected > gathered

    def close(self) -> None:
        """Stop the batching thread after the requests already queued."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)

    def _direct(self, rows: Batch) -> BatchResult:
        start = time.perf_counter()
        outputs = self._model(rows)
        infer = time.perf_counter() - start
        if self._on_batch is not None:
            self._on_batch(int(rows.shape[0]))
        return BatchResult(outputs, 0.0, infer, int(rows.shape[0]))

    def _gather(self, first: _Job) -> list[_Job]:
        jobs, rows = [first], int(first.rows.shape[0])
        deadline = first.enqueued + self.max_delay_s
        while rows < self.max_batch_size:
            if self._queue.empty() and not self._others_coming(len(jobs)):
                break
            timeout = deadline - time.perf_counter()
            try:
                job = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)
                break
            if rows + int(job.rows.shape[0]) > self.max_batch_size:
                self._carry = job
                break
            jobs.append(job)
            rows += int(job.rows.shape[0])
        return jobs

    def _loop(self) -> None:
        while True:
            first = self._carry if self._carry is not None else self._queue.get()
            self._carry = None
            if first is None:
                return
            jobs = self._gather(first)
            self._run(jobs)

    def _run(self, jobs: list[_Job]) -> None:
        start = time.perf_counter()
        try:
            batch = jobs[0].rows if len(jobs) == 1 else np.concatenate([j.rows for j in jobs])
            outputs = self._model(batch)
        except BaseException as exc:  # handed to every waiting request, which turns it into a 500
            for job in jobs:
                job.error = exc
                job.done.set()
            return
        infer = time.perf_counter() - start
        total = int(batch.shape[0])
        offset = 0
        for job in jobs:
            n = int(job.rows.shape[0])
            mine = {
                name: (arr[offset : offset + n] if arr.ndim and arr.shape[0] == total else arr)
                for name, arr in outputs.items()
            }
            offset += n
            job.result = BatchResult(mine, start - job.enqueued, infer, total)
            job.done.set()
        if self._on_batch is not None:  # once the requests are on their way
            self._on_batch(total)
