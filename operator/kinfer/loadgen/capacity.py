"""Capacity mode: find the highest offered rate that meets the SLO (DESIGN.md §3, §9).

The search (:class:`Search`, pure) probes ``min_rps`` first; if that fails there is no capacity.
Otherwise it doubles the rate until a probe fails or ``max_rps`` passes, then bisects between the
highest passing and the lowest failing rate until ``(hi - lo) / hi < precision``.

Each probe is an open-loop constant-rate run by a fresh set of generators (in worker processes, as in
schedule mode), measured as perf_analyzer measures (:class:`Windows`): a warm-up (one window unless
``--warmup``) is sent and discarded, so the queue a rate builds is there before anything counts; then
windows of ``probe_duration / 3`` (whole record intervals) follow until the last 3 agree: each one's
p99 and throughput within ``tolerance`` of the three's mean, and the p99 not still climbing window
after window (a queue near saturation fills up slowly: its windows can agree while it does). A stable probe is judged by
:func:`kinfer.api.slo.evaluate` on all its measured windows together (merged HdrHistograms, latency
from the scheduled send time, failures and drops counted against it). A probe still unstable after
``max_windows`` windows is judged the same way on everything it measured and reported with
``"stable": false``: a queue near saturation is bursty, and its windows may never agree within a
tight tolerance although their sum estimates its p99 well; judging only quiet, agreeing stretches would
flatter it. A probe whose every window (at least 2) fails the SLO, its p99 beyond the bound by more
than the tolerance, fails at once (an overloaded queue only grows). Each probe reports its windows,
its sample count (responses judged) and its stability.

:class:`CapacityRun` is one :class:`~kinfer.loadgen.runner.Run` for the control API, the terminal and
the results: its recorder carries on across probes (records' ``t`` continues, one
stage per probe), so ``GET /api/status``, ``/metrics``, ``records.csv`` and ``summary.json`` look like a
schedule run whose stages are decided as it goes, plus ``capacity`` {rps, p99Ms, probes}.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from kinfer.api.loadexperiment import SLO
from kinfer.api.schedule import Stage
from kinfer.api.slo import capacity_verdict, evaluate
from kinfer.loadgen.config import LoadgenConfig
from kinfer.loadgen.engine import GeneratorSpec, Snapshot
from kinfer.loadgen.plan import RatePlan
from kinfer.loadgen.runner import Phase, Run, iso
from kinfer.loadgen.stats import Bucket, percentile_ms
from kinfer.loadgen.workers import GeneratorGroup, LocalGroup, ProcessGroup

#: Pause between probes, seconds: lets the target drain whatever it still queues.
PROBE_PAUSE_S = 0.5
#: Consecutive windows that must agree for a probe to be stable (perf_analyzer's 3).
STABLE_WINDOWS = 3
#: Windows that must all fail the SLO clearly before a probe fails early.
EARLY_FAIL_WINDOWS = 2


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
    #: Responses the verdict was judged on (the measured windows, warm-up excluded).
    samples: int | None = None
    #: Whether the last windows agreed (``None``: not measured in windows).
    stable: bool | None = None
    #: Each measured window's ``{p99Ms, throughput, samples}``.
    windows: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """``{rps, p99Ms, serviceRate, met, message, samples, stable, windows, startS, endS}``."""
        return {
            "rps": round(self.rps, 3),
            "p99Ms": None if self.p99_ms is None else round(self.p99_ms, 3),
            "serviceRate": None if self.service_rate is None else round(self.service_rate, 4),
            "met": self.met,
            "samples": self.samples,
            "stable": self.stable,
            "windows": list(self.windows),
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


@dataclass(frozen=True)
class Window:
    """One measurement window of a probe."""

    bucket: Bucket
    seconds: float

    @property
    def p99_ms(self) -> float | None:
        """The window's p99 latency (successes, from the scheduled send), ms."""
        return percentile_ms(self.bucket.latency, 99.0)

    @property
    def throughput(self) -> float:
        """Responses completed per second."""
        return self.bucket.completed / self.seconds

    def to_json(self) -> dict[str, Any]:
        p99 = self.p99_ms
        return {"p99Ms": None if p99 is None else round(p99, 3), "throughput": round(self.throughput, 3),
                "samples": self.bucket.completed}  # fmt: skip


def agree(values: list[float | None], tolerance: float) -> bool:
    """Whether every value lies within ``tolerance`` (relative) of their mean."""
    if not values or any(v is None for v in values):
        return False
    known = [float(v) for v in values if v is not None]
    mean = sum(known) / len(known)
    return all(abs(v - mean) <= tolerance * mean for v in known)


def still_rising(values: list[float | None], tolerance: float) -> bool:
    """Whether the values climb window after window by more than half the tolerance in all: a queue
    still filling up (near saturation it does so for a long time) agrees within a tolerance while its
    p99 is still on the way up."""
    known = [v for v in values if v is not None]
    if len(known) < len(values) or len(known) < 2:
        return False
    climbing = all(a < b for a, b in itertools.pairwise(known))
    return climbing and known[-1] - known[0] > tolerance / 2 * (sum(known) / len(known))


class Windows:
    """One probe's measurement, interval by interval: warm-up, windows, the stopping rule, the verdict.

    Fed the merged buckets of consecutive record intervals (:meth:`add_interval`); says when the probe
    can stop (:attr:`done`) and judges it (:meth:`verdict`). No I/O: tested on synthetic buckets.
    """

    def __init__(
        self,
        slo: SLO,
        *,
        interval: float,
        warmup_intervals: int,
        window_intervals: int,
        tolerance: float,
        max_windows: int,
    ) -> None:
        self.slo = slo
        self.interval = interval
        self.warmup_intervals = warmup_intervals
        self.window_intervals = window_intervals
        self.tolerance = tolerance
        self.max_windows = max_windows
        self.windows: list[Window] = []
        self.stable = False
        self.early_fail = False
        self._intervals = 0
        self._current = Bucket()

    @property
    def done(self) -> bool:
        """Whether the probe has measured enough: stable, clearly failing, or out of windows."""
        return self.stable or self.early_fail or len(self.windows) >= self.max_windows

    @property
    def intervals_needed(self) -> int:
        """Intervals of the longest probe: warm-up and every window."""
        return self.warmup_intervals + self.max_windows * self.window_intervals

    def add_interval(self, bucket: Bucket) -> None:
        """Take the next record interval's bucket (all stages, all generators merged)."""
        if self.done:
            return
        self._intervals += 1
        if self._intervals <= self.warmup_intervals:
            return  # the transient: discarded
        self._current.merge(bucket)
        if (self._intervals - self.warmup_intervals) % self.window_intervals:
            return
        self.windows.append(Window(self._current, self.window_intervals * self.interval))
        self._current = Bucket()
        self._decide()

    def _decide(self) -> None:
        last = self.windows[-STABLE_WINDOWS:]
        if len(last) == STABLE_WINDOWS:
            p99s = [w.p99_ms for w in last]
            self.stable = (
                agree(p99s, self.tolerance)
                and agree([w.throughput for w in last], self.tolerance)
                and not still_rising(p99s, self.tolerance)
            )
        if not self.stable and len(self.windows) >= EARLY_FAIL_WINDOWS:
            self.early_fail = all(self._clearly_fails(w) for w in self.windows)

    def _clearly_fails(self, window: Window) -> bool:
        b = window.bucket
        if evaluate(self.slo, window.p99_ms, b.completed + b.error_count, b.completed, b.dropped).met:
            return False
        p99 = window.p99_ms
        bound = self.slo.p99_ms
        return bound is None or p99 is None or p99 > bound * (1 + self.tolerance)

    def judged(self) -> Bucket:
        """Everything measured after the warm-up, merged."""
        out = Bucket()
        for w in self.windows:
            out.merge(w.bucket)
        return out

    def verdict(self, rate: float) -> Probe:
        """The probe's verdict on all its windows (``start_s``/``end_s`` left for the caller)."""
        b = self.judged()
        p99 = percentile_ms(b.latency, 99.0)
        latency = b.latency
        # the requests that ended in the windows: a window's sends end partly in the next one
        ended = b.completed + b.error_count
        verdict = evaluate(
            self.slo, p99, ended, b.completed, b.dropped, latency_at=lambda q: percentile_ms(latency, q)
        )
        offered = ended + b.dropped
        if not self.windows:
            how = "no window measured"
        elif self.early_fail:
            how = f"every one of {len(self.windows)} windows fails the SLO: overloaded"
        elif self.stable:
            how = f"stable after {len(self.windows)} windows"
        else:
            how = f"unstable: the last {STABLE_WINDOWS} of {len(self.windows)} windows never agreed within " \
                  f"{self.tolerance:.0%}, judged on all of them"  # fmt: skip
        return Probe(
            rps=rate,
            met=verdict.met and bool(self.windows),
            p99_ms=p99,
            service_rate=b.completed / offered if offered else None,
            message=f"{verdict.message}; {b.completed} samples, {how}",
            samples=b.completed,
            stable=self.stable,
            windows=tuple(w.to_json() for w in self.windows),
        )


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

    def window_intervals(self) -> int:
        """Record intervals per measurement window: ``probe_duration / 3``, at least one."""
        c = self.config
        return max(1, round(c.probe_duration / STABLE_WINDOWS / c.interval))

    def warmup_intervals(self) -> int:
        """Record intervals of warm-up before a probe's windows (default: one window)."""
        c = self.config
        return self.window_intervals() if c.warmup is None else math.ceil(c.warmup / c.interval - 1e-9)

    def probe_limit_s(self) -> float:
        """The longest a probe sends: warm-up and ``max_windows`` windows."""
        c = self.config
        return (self.warmup_intervals() + c.max_windows * self.window_intervals()) * c.interval

    async def _probe(self, rate: float) -> Probe | None:
        """One constant-rate probe; ``None`` when the search was stopped during it."""
        c = self.config
        index = len(self._stages)
        windows = Windows(
            self.slo,
            interval=c.interval,
            warmup_intervals=self.warmup_intervals(),
            window_intervals=self.window_intervals(),
            tolerance=c.tolerance,
            max_windows=c.max_windows,
        )
        limit = self.probe_limit_s()
        stage = Stage(rps=rate, duration=f"{limit:.6f}s")
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
            end=limit,
            arrival=c.arrival,
            seed=None if c.seed is None else c.seed + index,
            timeout=c.timeout,
            max_in_flight=c.max_in_flight,
            interval=c.interval,
            cpus=c.worker_cpus,
        )

        offset = self._next_index  # set again once the start time is known
        pending: dict[int, list[Snapshot]] = {}
        next_interval = 0

        def measure(snap: Snapshot) -> None:
            # the probe's own intervals, merged over generators, in order, into its windows
            nonlocal next_interval
            pending.setdefault(snap.index, []).append(snap)
            while len(pending.get(next_interval, ())) >= c.processes or (
                pending.get(next_interval) and any(s.final for s in pending[next_interval])
            ):
                merged = Bucket()
                for part in pending.pop(next_interval):
                    for b in part.buckets.values():
                        merged.merge(b)
                next_interval += 1
                if not windows.done:
                    windows.add_interval(merged)
                    if windows.done:  # not from inside the pipe's reader callback: from the loop
                        asyncio.get_running_loop().call_soon(group.stop)

        def sink(worker: int, snap: Snapshot) -> None:
            measure(snap)
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
        return replace(windows.verdict(rate), start_s=start_s, end_s=time.monotonic() - self.t0)

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
        ends = self._probe_started + timedelta(seconds=self.probe_limit_s())  # at the latest
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
        c = self.config
        cap.update(
            windowS=round(self.window_intervals() * c.interval, 3),
            warmupS=round(self.warmup_intervals() * c.interval, 3),
            tolerance=c.tolerance,
            maxWindows=c.max_windows,
            stableWindows=STABLE_WINDOWS,
        )
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
