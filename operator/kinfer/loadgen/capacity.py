"""Capacity mode: find the highest offered rate that meets the SLO (DESIGN.md §3, §9).

The search (:class:`Search`, pure) probes ``min_rps`` first; if that fails there is no capacity.
Otherwise it doubles the rate until a probe fails or ``max_rps`` passes, then bisects between the
highest passing and the lowest failing rate until ``(hi - lo) / hi < precision``.

Each probe is an open-loop constant-rate run of ``probe_duration`` by a fresh set of generators (in
worker processes, as in schedule mode), judged by :func:`kinfer.api.slo.evaluate` on that probe's
exact percentiles (merged HdrHistograms, latency from the scheduled send time) and its
completed/offered. :class:`CapacityRun` is one :class:`~kinfer.loadgen.runner.Run` for the control API,
the terminal and the results: its recorder carries on across probes (records' ``t`` continues, one
stage per probe), so ``GET /api/status``, ``/metrics``, ``records.csv`` and ``summary.json`` look like a
schedule run whose stages are decided as it goes, plus ``capacity`` {rps, p99Ms, probes}.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kinfer.api.loadexperiment import SLO
from kinfer.api.schedule import Stage
from kinfer.api.slo import capacity_verdict, evaluate
from kinfer.loadgen.config import LoadgenConfig
from kinfer.loadgen.engine import GeneratorSpec, Snapshot
from kinfer.loadgen.plan import RatePlan
from kinfer.loadgen.runner import Phase, Run, iso
from kinfer.loadgen.stats import percentile_ms
from kinfer.loadgen.workers import GeneratorGroup, LocalGroup, ProcessGroup

#: Pause between probes, seconds: lets the target drain whatever it still queues.
PROBE_PAUSE_S = 0.5


@dataclass(frozen=True)
class Probe:
    """One probed rate and its verdict."""

    rps: float
    met: bool
    p99_ms: float | None = None
    service_rate: float | None = None
    message: str = ""
    #: Where the probe lies in the run, seconds since its start (records' ``t``).
    start_s: float | None = None
    end_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        """``{rps, p99Ms, serviceRate, met, message, startS, endS}``."""
        return {
            "rps": round(self.rps, 3),
            "p99Ms": None if self.p99_ms is None else round(self.p99_ms, 3),
            "serviceRate": None if self.service_rate is None else round(self.service_rate, 4),
            "met": self.met,
            "message": self.message,
            "startS": None if self.start_s is None else round(self.start_s, 3),
            "endS": None if self.end_s is None else round(self.end_s, 3),
        }


class Search:
    """The rate search, with no I/O: ask :meth:`next_rate`, probe it, :meth:`record` the result."""

    def __init__(self, min_rps: float, max_rps: float, precision: float) -> None:
        if not 0 < min_rps <= max_rps:
            raise ValueError(f"need 0 < min_rps <= max_rps, got {min_rps!r}, {max_rps!r}")
        if not 0 < precision < 1:
            raise ValueError(f"precision must be in (0, 1), got {precision!r}")
        self.min_rps = min_rps
        self.max_rps = max_rps
        self.precision = precision
        self.probes: list[Probe] = []
        #: Highest passing rate and lowest failing rate so far.
        self.lo: float | None = None
        self.hi: float | None = None

    def next_rate(self) -> float | None:
        """The next rate to probe, ``None`` once the search is over."""
        if not self.probes:
            return self.min_rps
        if self.lo is None:
            return None  # min_rps failed: no capacity
        if self.hi is None:
            return None if self.lo >= self.max_rps else min(self.lo * 2, self.max_rps)
        if (self.hi - self.lo) / self.hi < self.precision:
            return None
        return round((self.lo + self.hi) / 2, 3)

    def record(self, probe: Probe) -> None:
        """Take a probe's verdict."""
        self.probes.append(probe)
        if probe.met:
            self.lo = probe.rps if self.lo is None else max(self.lo, probe.rps)
        else:
            self.hi = probe.rps if self.hi is None else min(self.hi, probe.rps)

    @property
    def best(self) -> Probe | None:
        """The (last) passing probe at the highest passing rate."""
        passing = [p for p in self.probes if p.met and p.rps == self.lo]
        return passing[-1] if passing else None

    def to_json(self) -> dict[str, Any]:
        """summary.json's and the status's ``capacity``: {rps, p99Ms, probes}."""
        best = self.best
        return {
            "rps": None if best is None else round(best.rps, 3),
            "p99Ms": None if best is None or best.p99_ms is None else round(best.p99_ms, 3),
            "probes": [p.to_json() for p in self.probes],
            "minRPS": self.min_rps,
            "maxRPS": self.max_rps,
            "precision": self.precision,
        }


def search(probe: Callable[[float], Probe], min_rps: float, max_rps: float, precision: float) -> Search:
    """Run a whole search with a synchronous probe function (tests, what-ifs)."""
    s = Search(min_rps, max_rps, precision)
    while (rate := s.next_rate()) is not None:
        s.record(probe(rate))
    return s


class CapacityRun(Run):
    """A capacity search behind the same control API, terminal view and results as a schedule run."""

    def __init__(self, config: LoadgenConfig, *, in_process: bool = False, out: Any = None) -> None:
        super().__init__(config, in_process=in_process, out=out)
        self.search = Search(config.min_rps, config.max_rps, config.precision)
        self.slo = SLO(p99_ms=config.slo_p99_ms, min_success_rate=config.min_success_rate)
        self._in_process = isinstance(self.group, LocalGroup)
        self._stages: list[Stage] = []
        self._probe_started: datetime | None = None
        self._next_index = 0
        self._stop_event = asyncio.Event()
        self.plan = RatePlan(config.stages, loop=False, end=math.inf)
        self.plan.override = 0.0
        self.recorder.plan = self.plan

    # -- control ----------------------------------------------------------------------------------

    def set_intensity(self, rps: float | None) -> None:
        """Refused: the search sets the rate."""
        from kinfer.loadgen.control import BadRequest

        raise BadRequest("capacity mode sets the rate itself; intensity is not available")

    def stop(self) -> None:
        """End the search gracefully: the probe under way is cut short and not judged."""
        super().stop()
        self._stop_event.set()

    # -- the search -------------------------------------------------------------------------------

    async def execute(self) -> None:
        """Probe rate after rate, write results. Never raises for the run's own failures."""
        try:
            self.t0 = time.monotonic()
            self.started_at = datetime.now(UTC)
            self.phase = Phase.RUNNING
            while not self._stop_requested and (rate := self.search.next_rate()) is not None:
                if self.search.probes:
                    await self._pause(PROBE_PAUSE_S)
                    if self._stop_requested:
                        break
                probe = await self._probe(rate)
                if probe is not None:
                    self.search.record(probe)
                    self._announce(probe)
            self.phase = Phase.STOPPED if self._stop_requested else Phase.SUCCEEDED
        except Exception as exc:  # process boundary: a failed run still writes what it measured
            self._failed(exc)
        finally:
            self.plan.override = 0.0
            self._finish(math.inf)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    async def _probe(self, rate: float) -> Probe | None:
        """One constant-rate probe; ``None`` when the search was stopped during it."""
        c = self.config
        index = len(self._stages)
        stage = Stage(rps=rate, duration=f"{c.probe_duration:.6f}s")
        self._stages.append(stage)
        self.plan = RatePlan(self._stages, loop=False, end=math.inf)
        self.plan.override = 0.0
        self.recorder.plan = self.plan
        spec = GeneratorSpec(
            target=c.target,
            method=c.method,
            payload=c.payload,
            protocol=c.protocol,
            input_name=c.input_name,
            stages=[stage],
            loop=False,
            end=c.probe_duration,
            arrival=c.arrival,
            seed=None if c.seed is None else c.seed + index,
            timeout=c.timeout,
            max_in_flight=c.max_in_flight,
            interval=c.interval,
            cpus=c.worker_cpus,
        )

        def sink(worker: int, snap: Snapshot) -> None:
            snap.index += offset
            snap.buckets = {index + k: b for k, b in snap.buckets.items()}
            self._next_index = max(self._next_index, snap.index + 1)
            self.recorder.add(worker, snap)

        group: GeneratorGroup = LocalGroup(spec, sink) if self._in_process else ProcessGroup(spec, c.processes, sink)
        self.group = group
        await group.prepare()
        assert self.t0 is not None
        t_start = time.monotonic() + self._start_delay
        start_s = t_start - self.t0
        offset = max(self._next_index, math.floor(start_s / c.interval))
        self.recorder.restart(offset)
        self._probe_started = datetime.now(UTC) + timedelta(seconds=self._start_delay)
        if self._stop_requested:
            group.stop()  # workers started after the stop: let them end at once
        self.plan.override = rate
        try:
            await group.run(t_start)
        finally:
            self.plan.override = 0.0
        if self._stop_requested:
            return None
        bucket = self.recorder.stages.get(index)
        sent = bucket.sent if bucket else 0
        completed = bucket.completed if bucket else 0
        dropped = bucket.dropped if bucket else 0
        p99 = percentile_ms(bucket.latency, 99.0) if bucket else None
        latency = bucket.latency if bucket else None
        verdict = evaluate(
            self.slo, p99, sent, completed, dropped,
            latency_at=lambda q: None if latency is None else percentile_ms(latency, q),
        )  # fmt: skip
        offered = sent + dropped
        return Probe(
            rps=rate,
            met=verdict.met,
            p99_ms=p99,
            service_rate=completed / offered if offered else None,
            message=verdict.message,
            start_s=start_s,
            end_s=time.monotonic() - self.t0,
        )

    def _announce(self, probe: Probe) -> None:
        if self.config.quiet:
            return
        p99 = "-" if probe.p99_ms is None else f"{probe.p99_ms:.2f}ms"
        sr = "-" if probe.service_rate is None else f"{probe.service_rate * 100:.1f}%"
        word = "meets" if probe.met else "fails"
        print(
            f"probe {len(self.search.probes) - 1}: {probe.rps:g} rps p99={p99} SR={sr}: {word} the SLO "
            f"({probe.message})",
            file=self._out,
            flush=True,
        )

    # -- views ------------------------------------------------------------------------------------

    def stage_status(self) -> dict[str, Any] | None:
        """The probe under way (or the last one, between probes): ``{index, rps, endsAt}``."""
        if self.phase is not Phase.RUNNING or not self._stages or self._probe_started is None:
            return None
        index = len(self._stages) - 1
        ends = self._probe_started + timedelta(seconds=self.config.probe_duration)
        return {"index": index, "rps": self._stages[index].end_rps, "endsAt": iso(ends)}

    def stage_elapsed(self) -> float | None:
        """Probes are stages of their configured length (the pauses between them lie outside)."""
        return None

    def status(self) -> dict[str, Any]:
        """Schedule mode's snapshot plus ``mode`` and the ``capacity`` found so far."""
        out = super().status()
        out["mode"] = "capacity"
        out["capacity"] = self.search.to_json()
        return out

    def summary(self) -> dict[str, Any]:
        """summary.json: the whole search's fields (all probes together), one stage per probe, and
        ``capacity``; ``slo.met`` says whether a capacity (>= min-rps) was found."""
        out = super().summary()
        cap = self.search.to_json()
        out["mode"] = "capacity"
        out["capacity"] = cap
        out["slo"]["met"] = cap["rps"] is not None
        out["slo"]["message"] = capacity_verdict(cap).message
        return out


def run_main(config: LoadgenConfig) -> int:
    """``kinfer loadgen --mode capacity``: 0 capacity found, 1 none (or the run failed), 2 bad input."""
    from kinfer.loadgen.runner import run_to_end

    result = run_to_end(CapacityRun(config))
    if result is None:
        return 2
    assert isinstance(result, CapacityRun)
    cap = result.search.to_json()
    if not config.quiet:
        n = len(cap["probes"])
        if cap["rps"] is not None:
            print(f"done: {result.phase.value} capacity {cap['rps']:g} rps at p99 {cap['p99Ms']} ms "
                  f"({n} probes)", flush=True)  # fmt: skip
        else:
            why = (f"{config.min_rps:g} rps fails the SLO ({cap['probes'][0]['message']})" if cap["probes"]
                   else "no probe completed")  # fmt: skip
            print(f"done: {result.phase.value} no capacity: {why}", flush=True)
    if result.phase is Phase.FAILED:
        return 1
    return 0 if cap["rps"] is not None else 1
