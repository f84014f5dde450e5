"""One generator: the open- or closed-loop send loop, completions into per-interval buckets, periodic
snapshots.

Open loop: the send loop sleeps until each scheduled time and sends, whatever earlier requests are
doing; a request that would exceed ``max_in_flight`` is counted ``dropped`` at its scheduled time, never
delayed. Timestamps are ``time.monotonic()`` (the loop's own clock may be millisecond-grained); the
last millisecond before a send is spent yielding to the loop rather than in a timer, whose resolution
is too coarse for sub-millisecond schedules.

Closed loop: ``clients`` virtual clients, each sending its next request from the completion callback
of its previous one (after ``think_time``), with no task or timer per request; latency is measured
from the actual send (there is no schedule), so a slow server slows the clients down instead of
showing up as queueing (coordinated omission). A stage boundary or a live change of the number of
clients starts new clients at once; surplus clients retire when their request completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kinfer.api.schedule import Stage
from kinfer.loadgen.arrivals import ArrivalKind, Arrivals
from kinfer.loadgen.httpclient import ConnectionPool, Target
from kinfer.loadgen.payloads import PayloadSpec, Protocol, build_request, load_bodies
from kinfer.loadgen.plan import RatePlan
from kinfer.loadgen.stats import Bucket, record_seconds

#: Below this many seconds to the next send, yield to the loop instead of arming a timer.
SPIN_BELOW = 0.002
#: How often in-flight requests are checked for timeouts, seconds (at most).
SWEEP_EVERY = 0.05
#: How long a stopped run waits for in-flight requests before counting them ``aborted``.
STOP_GRACE = 1.0
#: Closed loop: a client whose request failed to connect waits this long before its next one, so that
#: an unreachable target is not hammered in a tight loop.
CONNECT_RETRY_S = 0.01
#: Closed loop: longest sleep of the client-count loop when nothing is scheduled to change, seconds.
IDLE_WAIT_S = 3600.0


@dataclass(frozen=True)
class GeneratorSpec:
    """Everything one generator needs; picklable, so ``--processes N`` sends it to each worker."""

    target: Target
    method: str
    payload: PayloadSpec
    protocol: Protocol
    input_name: str
    stages: list[Stage]
    loop: bool
    end: float
    arrival: ArrivalKind
    seed: int | None
    timeout: float
    max_in_flight: int
    interval: float
    share: float = 1.0
    phase: float = 0.0
    #: CPUs this generator's process is pinned to (empty: wherever the OS puts it).
    cpus: tuple[int, ...] = ()
    #: Closed loop: each client's pause between a response and its next request, seconds.
    think_time: float = 0.0
    #: Stop after this many requests (offered: sent + dropped); ``None``: no limit.
    requests: int | None = None
    #: Images per request (v2 batches).
    batch_size: int = 1
    #: This generator's index among ``workers`` sharing the load (closed loop: clients are split).
    worker: int = 0
    workers: int = 1


@dataclass
class Snapshot:
    """One record interval of one generator: buckets by stage index, and the rate it was aiming at."""

    index: int
    duration: float
    target_rps: float
    in_flight: int
    buckets: dict[int, Bucket] = field(default_factory=dict)
    final: bool = False
    #: Closed loop: this generator's clients at the end of the interval.
    concurrency: int = 0

    def encode(self) -> dict[str, Any]:
        """A picklable form for the pipe from a worker process."""
        return {
            "index": self.index,
            "duration": self.duration,
            "targetRPS": self.target_rps,
            "inFlight": self.in_flight,
            "final": self.final,
            "concurrency": self.concurrency,
            "buckets": {k: b.encode() for k, b in self.buckets.items()},
        }

    @classmethod
    def decode(cls, data: dict[str, Any]) -> Snapshot:
        """Inverse of :meth:`encode`."""
        return cls(
            index=data["index"],
            duration=data["duration"],
            target_rps=data["targetRPS"],
            in_flight=data["inFlight"],
            final=data["final"],
            concurrency=data.get("concurrency", 0),
            buckets={int(k): Bucket.decode(b) for k, b in data["buckets"].items()},
        )


def _wake_future(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Generator:
    """Sends one process's share of the schedule and reports a :class:`Snapshot` every interval."""

    def __init__(self, spec: GeneratorSpec, sink: Callable[[Snapshot], None]) -> None:
        self.spec = spec
        self._sink = sink
        bodies = load_bodies(spec.payload, spec.protocol, spec.input_name, spec.batch_size)
        host = spec.target.host_header
        self._requests = [build_request(spec.method, spec.target.path, host, b) for b in bodies] or [
            build_request(spec.method, spec.target.path, host, None)
        ]
        self.plan = RatePlan(
            spec.stages, loop=spec.loop, end=spec.end, share=spec.share, worker=spec.worker, workers=spec.workers
        )
        self.arrivals = Arrivals(spec.arrival, self.plan, seed=spec.seed, phase=spec.phase)
        self._rng = random.Random(None if spec.seed is None else spec.seed + 7919)
        self.pool = ConnectionPool(spec.target, self._on_done, timeout=spec.timeout)
        self._buckets: dict[int, Bucket] = {}
        self._changed = False
        self._stopped = False
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Event | None = None
        self._t0 = 0.0
        self._k = 0
        #: Requests this generator may still offer (``None``: no limit).
        self._budget: int | None = spec.requests
        # closed loop: clients running (sending or thinking), how many there should be, no new sends
        self._clients = 0
        self._clients_target = 0
        self._ending = False
        self._closed = self.plan.closed
        self._span = self.plan.span(0.0)

    # -- control ----------------------------------------------------------------------------------

    def set_intensity(self, rps: float | None) -> None:
        """Override the schedule's total rate, or in a closed loop its number of clients (``None``: back
        to the schedule); applies at once."""
        self.plan.override = rps
        self._wake()

    def stop(self) -> None:
        """Stop sending; in-flight requests get a short grace period."""
        self._stopped = True
        self._wake()

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopped

    def _wake(self) -> None:
        self._changed = True
        if self._waiter is not None:
            _wake_future(self._waiter)

    # -- the run ----------------------------------------------------------------------------------

    async def run(self, t0: float) -> None:
        """Run from monotonic time ``t0`` until the schedule ends or :meth:`stop`; then drain and report."""
        self._t0 = t0
        flusher = asyncio.create_task(self._flush_loop())
        sweeper = asyncio.create_task(self._sweep_loop())
        try:
            if self.plan.closed:
                await self._closed_loop()
            else:
                await self._send_loop()
            self._ending = True
            await self._drain(STOP_GRACE if self._stopped else self.spec.timeout + SWEEP_EVERY)
        finally:
            flusher.cancel()
            sweeper.cancel()
            self.pool.abort_all("aborted")
            self.pool.close()
            now = time.monotonic()
            start = self._t0 + self._k * self.spec.interval
            self._flush(max(now - start, 0.0), final=True)

    async def _send_loop(self) -> None:
        arrivals = self.arrivals
        plan = self.plan
        pool = self.pool
        t0 = self._t0
        end = plan.end
        requests = self._requests
        pick = self._rng.randrange
        n_requests = len(requests)
        max_in_flight = self.spec.max_in_flight
        mono = time.monotonic
        buckets_get = self._buckets_get
        span = plan.span(0.0)
        while not self._stopped:
            t, is_arrival = arrivals.next_event()
            if t >= end:
                # the schedule's last interval lasts until its end, even when its last send came early
                while not self._stopped and (delay := t0 + end - mono()) > 0:
                    await self._wait(delay)
                break
            due = t0 + t
            while not self._changed:
                delay = due - mono()
                if delay <= 0:
                    break
                if delay > SPIN_BELOW:
                    await self._wait(delay - SPIN_BELOW / 2)
                else:
                    await asyncio.sleep(0)
            if self._changed:
                self._changed = False
                if self._stopped:
                    break
                rel = mono() - t0
                if rel < t:
                    arrivals.rebase(rel)
                    continue
            if not is_arrival:
                continue
            if not span.start <= t < span.end:
                span = plan.span(t)
            bucket = buckets_get(span.index)
            if self._budget is not None:
                if self._budget <= 0:
                    break
                self._budget -= 1
            if pool.in_flight >= max_in_flight:
                bucket.dropped += 1
                continue
            data = requests[pick(n_requests)] if n_requests > 1 else requests[0]
            sent = pool.send(data, due, span.index)
            bucket.sent += 1
            record_seconds(bucket.lag, sent - due)

    async def _closed_loop(self) -> None:
        """Keep this generator's share of the stage's clients running until the end, the request budget
        or :meth:`stop`; the clients themselves send from completion callbacks (:meth:`_client_next`)."""
        plan, t0, mono = self.plan, self._t0, time.monotonic
        while not self._stopped and (delay := t0 - mono()) > 0:
            await self._wait(delay)
        while not self._stopped:
            rel = mono() - t0
            if rel >= plan.end or (self._budget is not None and self._budget <= 0):
                break
            self._span = plan.span(rel)
            self._clients_target = plan.clients(rel)
            while self._clients < self._clients_target and not self._ending:
                self._clients += 1
                self._client_next()
            if self._changed:
                self._changed = False
                continue
            await self._wait(min(plan.next_change(rel) - rel, IDLE_WAIT_S))
            self._changed = False
        self._ending = True

    def _client_next(self) -> None:
        """One client's next request, or its retirement (surplus client, budget spent, run over)."""
        now = time.monotonic()
        rel = now - self._t0
        budget = self._budget
        if (
            self._ending
            or self._stopped
            or self._clients > self._clients_target
            or rel >= self.plan.end
            or (budget is not None and budget <= 0)
        ):
            self._clients -= 1
            if not self._ending and not self._stopped:
                self._wake()  # the loop notices the end (or the budget) at once
            return
        if budget is not None:
            self._budget = budget - 1
        span = self._span
        if not span.start <= rel < span.end:
            span = self._span = self.plan.span(rel)
        requests = self._requests
        data = requests[self._rng.randrange(len(requests))] if len(requests) > 1 else requests[0]
        self._buckets_get(span.index).sent += 1
        self.pool.send(data, now, span.index)

    def _after_response(self, error: str | None) -> None:
        """Closed loop: the client whose request just ended goes on (after its think time)."""
        delay = self.spec.think_time
        if error in ("connection", "reset", "closed"):  # a server refusing connections: no busy loop
            delay = max(delay, CONNECT_RETRY_S)
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._client_next)
        else:
            self._client_next()

    async def _wait(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiter = fut
        handle = loop.call_later(delay, _wake_future, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._waiter = None

    async def _drain(self, grace: float) -> None:
        if self.pool.in_flight == 0:
            return
        self._drained = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), grace)

    def _buckets_get(self, stage: int) -> Bucket:
        bucket = self._buckets.get(stage)
        if bucket is None:
            bucket = self._buckets[stage] = Bucket()
        return bucket

    def _on_done(
        self,
        due: float,
        sent: float,
        stage: int,
        status: int,
        error: str | None,
        timing: str | None,
        now: float,
    ) -> None:
        bucket = self._buckets_get(stage)
        closed = self._closed
        if error is None:
            bucket.completed += 1
            record_seconds(bucket.latency, now - due)
            bucket.latency_sum += now - due
            if not closed:  # closed loop: due is the send, the service time is the latency (see _flush)
                record_seconds(bucket.service, now - sent)
                bucket.service_sum += now - sent
            if timing:
                bucket.record_server_timing(timing)
        else:
            bucket.errors[error] += 1
        if closed and not self._ending:
            self._after_response(error)
        if self._drained is not None and self.pool.in_flight == 0:
            self._drained.set()

    # -- reporting --------------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        interval = self.spec.interval
        while True:
            boundary = self._t0 + (self._k + 1) * interval
            await asyncio.sleep(max(boundary - time.monotonic(), 0.0))
            self._flush(interval, final=False)

    async def _sweep_loop(self) -> None:
        every = min(SWEEP_EVERY, self.spec.timeout / 4)
        while True:
            await asyncio.sleep(every)
            self.pool.sweep(time.monotonic())

    def _flush(self, duration: float, *, final: bool) -> None:
        buckets, self._buckets = self._buckets, {}
        if self._closed:
            for bucket in buckets.values():  # one histogram per response on the hot path, copied here
                bucket.service.add(bucket.latency)
                bucket.service_sum = bucket.latency_sum
        rel = time.monotonic() - self._t0
        target = 0.0 if self._stopped or math.isinf(rel) else self.plan.rate(rel)
        clients = 0 if self._stopped or self._ending or not self.plan.closed else self.plan.clients(rel)
        snapshot = Snapshot(self._k, duration, target, self.pool.in_flight, buckets, final, clients)
        self._k += 1
        self._sink(snapshot)
