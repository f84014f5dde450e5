"""One run from start to finish: generators, recorder, control API, terminal view and results.

:class:`Run` is the state the control API, the terminal view and the results writer all read (one
snapshot, :meth:`Run.status`, feeds the operator, the dashboard and ``kinfer run`` alike).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from kinfer.api.loadexperiment import SLO
from kinfer.api.schedule import MAX_CONCURRENCY
from kinfer.api.slo import Verdict, evaluate
from kinfer.loadgen.config import ConfigError, LoadgenConfig
from kinfer.loadgen.engine import GeneratorSpec
from kinfer.loadgen.plan import RatePlan
from kinfer.loadgen.recorder import Record, Recorder, stage_rps
from kinfer.loadgen.results import ResultsWriter
from kinfer.loadgen.server_resources import ServerScraper
from kinfer.loadgen.stats import latency_summary, max_ms, percentile_ms
from kinfer.loadgen.workers import GeneratorGroup, LocalGroup, ProcessGroup

#: Largest rate the control API accepts, requests/s.
MAX_RPS = 1_000_000.0
#: What the report and summary.json say about a closed loop's latency.
CLOSED_LOOP_NOTE = (
    "closed loop: each client sends its next request only when its previous one has completed, so "
    "latency is measured from the actual send and a slow server slows the clients down instead of "
    "queueing requests: closed loops hide queueing (coordinated omission); use an open-loop schedule "
    "(rps) to measure latency under a given offered load"
)
#: Delay between "ready" and the first scheduled send, so every process starts on time.
START_DELAY_LOCAL_S = 0.05
START_DELAY_PROCESSES_S = 0.3


class Phase(StrEnum):
    """Where a run is (the LoadExperiment status uses the same words)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    STOPPED = "Stopped"
    FAILED = "Failed"


def iso(ts: datetime) -> str:
    """RFC 3339 UTC timestamp, as Kubernetes writes them."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def validate_concurrency(value: float | None) -> float | None:
    """A closed loop's live override: a whole number of clients in [0, MAX_CONCURRENCY], or ``None``."""
    if value is None:
        return None
    if value != int(value) or value > MAX_CONCURRENCY:
        raise ValueError(
            f"this is a closed-loop run: the intensity is a number of clients, a whole number between 0 "
            f"and {MAX_CONCURRENCY}, got {value!r}"
        )
    return float(value)


def validate_rps(value: Any) -> float | None:
    """A rate from the control API: a finite number in [0, MAX_RPS], or ``None`` (back to schedule)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"rps must be a number or null, got {value!r}")
    if not math.isfinite(value) or value < 0 or value > MAX_RPS:
        raise ValueError(f"rps must be between 0 and {MAX_RPS:g}, got {value!r}")
    return float(value)


class Run:
    """A load run: phase, live records, control, results."""

    def __init__(self, config: LoadgenConfig, *, in_process: bool = False, out: Any = None) -> None:
        """``in_process`` runs a single generator on this event loop (tests, embedding); otherwise
        generators run in worker processes, so that recording, results and the control API never
        delay a scheduled send."""
        self.config = config
        self.plan = RatePlan(config.stages, loop=config.loop, end=config.end)
        self.recorder = Recorder(
            self.plan,
            interval=config.interval,
            window=config.window_records,
            generators=config.processes,
            batch_size=config.batch_size,
        )
        self.phase = Phase.PENDING
        self.error: str | None = None
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.t0: float | None = None
        self.sending_ended: float | None = None
        self.control_url: str | None = None
        self._out = out if out is not None else sys.stdout
        self._stop_requested = False
        self._linger_done = asyncio.Event()
        spec = GeneratorSpec(
            target=config.target,
            method=config.method,
            payload=config.payload,
            protocol=config.protocol,
            input_name=config.input_name,
            stages=config.stages,
            loop=config.loop,
            end=config.end,
            arrival=config.arrival,
            seed=config.seed,
            timeout=config.timeout,
            max_in_flight=config.max_in_flight,
            interval=config.interval,
            cpus=config.worker_cpus,
            think_time=config.think_time,
            requests=config.requests,
            batch_size=config.batch_size,
        )
        self.group: GeneratorGroup
        if in_process and config.processes == 1:
            self.group = LocalGroup(spec, self.recorder.add)
            self._start_delay = START_DELAY_LOCAL_S
        else:
            self.group = ProcessGroup(spec, config.processes, self.recorder.add)
            self._start_delay = START_DELAY_PROCESSES_S
        self.writer = ResultsWriter(config.output) if config.output is not None else None
        self.recorder.listeners.append(self._on_record)
        #: The target's /metrics, scraped beside the generators (see :func:`serve`).
        self.scraper = ServerScraper(config.server_metrics, config.interval)
        self.recorder.resources = self.scraper.take

    # -- control ----------------------------------------------------------------------------------

    def set_intensity(self, rps: float | None) -> None:
        """Override the schedule's rate (``None``: back to the schedule); validated by the caller as a
        rate. In a closed loop the value is a number of clients (a whole number, else 400)."""
        if self.plan.closed:
            from kinfer.loadgen.control import BadRequest

            try:
                rps = validate_concurrency(rps)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
        self.plan.override = rps
        self.group.set_intensity(rps)

    def stop(self) -> None:
        """End the run gracefully (results kept); a second call also ends the linger period."""
        if self._stop_requested or self.phase not in (Phase.PENDING, Phase.RUNNING):
            self._linger_done.set()
            return
        self._stop_requested = True
        if self.t0 is not None:
            self.sending_ended = min(time.monotonic() - self.t0, self.plan.end)
        self.group.stop()

    # -- the run ----------------------------------------------------------------------------------

    async def execute(self) -> None:
        """Prepare, send, drain, write results. Never raises for the run's own failures."""
        try:
            await self.group.prepare()
            delay = self._start_delay
            self.t0 = time.monotonic() + delay
            self.started_at = datetime.now(UTC) + timedelta(seconds=delay)
            if self._stop_requested:
                self.sending_ended = 0.0
            self.phase = Phase.RUNNING
            await self.group.run(self.t0)
            self.phase = Phase.STOPPED if self._stop_requested else Phase.SUCCEEDED
        except Exception as exc:  # process boundary: a failed run still writes what it measured
            self._failed(exc)
        finally:
            self._finish(self.plan.end)

    def _failed(self, exc: Exception) -> None:
        """Record a run that broke off (what it measured is still written)."""
        self.phase = Phase.FAILED
        self.error = f"{type(exc).__name__}: {exc}"
        print(f"kinfer loadgen: run failed: {self.error}", file=sys.stderr)

    def _finish(self, longest: float) -> None:
        """Close the run: when sending ended (at most ``longest`` s), final summary, results, report."""
        if self.sending_ended is None and self.t0 is not None:
            self.sending_ended = min(max(time.monotonic() - self.t0, 0.0), longest)
        self.finished_at = datetime.now(UTC)
        if self.writer is not None:
            self.writer.write_summary(self.summary())
            self.writer.close()
            self._write_report()

    def _write_report(self) -> None:
        """Plots and report.html from the files just written (summary.json, records.csv)."""
        assert self.config.output is not None
        try:
            from kinfer.loadgen.report import write_report

            write_report(self.config.output)
        except Exception as exc:  # the measurements are already on disk; a plot must not fail the run
            print(f"kinfer loadgen: could not write plots/report: {exc}", file=sys.stderr)

    async def linger(self) -> None:
        """Keep the control API up ``--linger`` seconds (or until ``/api/stop``)."""
        if self.config.linger > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._linger_done.wait(), self.config.linger)

    def _on_record(self, record: Record) -> None:
        if self.writer is not None:
            # summary first: whoever reads records.csv (a user, the local runner after a SIGKILL) finds
            # a summary.json that covers every record in it (it may cover one more, never one less)
            self.writer.write_summary(self.summary())
            self.writer.append_record(record)
        if not self.config.quiet:
            print(terminal_line(record), file=self._out, flush=True)

    # -- views ------------------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Seconds since the first scheduled send (0 before it)."""
        return 0.0 if self.t0 is None else max(time.monotonic() - self.t0, 0.0)

    def stage_status(self) -> dict[str, Any] | None:
        """``{index, rps, endsAt}`` of the stage in effect, ``None`` before the start or after the end."""
        if self.phase is not Phase.RUNNING or self.started_at is None:
            return None
        t = self.elapsed()
        if t >= self.plan.end:
            return None
        span = self.plan.span(t)
        out: dict[str, Any] = {
            "index": span.index,
            "rps": stage_rps(self.plan, span.index),
            "endsAt": iso(self.started_at + timedelta(seconds=span.end)) if math.isfinite(span.end) else None,
        }
        if self.plan.closed:
            out["concurrency"] = self.plan.stages[span.index].concurrency
        return out

    def mode(self) -> str:
        """``open`` (rates) or ``closed`` (clients)."""
        return "closed" if self.plan.closed else "open"

    def stage_elapsed(self) -> float | None:
        """Seconds of the schedule sent so far, for the stages' actual durations (``None``: use the
        configured ones)."""
        if self.sending_ended is not None:
            return self.sending_ended
        return self.elapsed() if self.t0 is not None else 0.0

    def status(self) -> dict[str, Any]:
        """The live snapshot: latest record, phase, stage, target, window aggregates, totals, stages."""
        last = self.recorder.records[-1].to_json() if self.recorder.records else None
        running = self.phase is Phase.RUNNING
        out: dict[str, Any] = {
            "phase": self.phase.value,
            "startedAt": iso(self.started_at) if self.started_at else None,
            "finishedAt": iso(self.finished_at) if self.finished_at else None,
            "elapsedS": round(self.elapsed(), 3),
            "stage": self.stage_status(),
            "targetRPS": round(self.plan.target(self.elapsed()), 3) if running else 0.0,
            "intensity": self.plan.override,
            "live": last,
            "mode": self.mode(),
            "batchSize": self.config.batch_size,
        }
        if self.plan.closed:
            out["concurrency"] = self.plan.concurrency(self.elapsed()) if running else 0
        if last is not None:
            for key, value in last.items():
                out.setdefault(key, value)
        else:
            out.update({"avgRPS": 0.0, "avgQPS": 0.0, "serviceRate": None, "avg99thMs": None})
        totals = self.recorder.totals()
        out.update(totals)
        out["totals"] = totals
        total = self.recorder.total
        out["latencyMs"] = _rounded(latency_summary(total.latency, total.latency_sum))
        out["stages"] = self.recorder.stage_summaries(self.stage_elapsed())
        out["records"] = len(self.recorder.records)
        out["server"] = self.recorder.server_summary()
        out["serverMetrics"] = {"urls": list(self.scraper.urls), "error": self.scraper.last_error}
        if self.error:
            out["error"] = self.error
        return out

    def summary(self) -> dict[str, Any]:
        """summary.json (DESIGN.md §9)."""
        total = self.recorder.total
        duration = self.sending_ended if self.sending_ended is not None else self.elapsed()
        offered = total.sent + total.dropped
        success = total.completed / offered if offered else None
        c = self.config
        verdict: Verdict | None = None
        if c.slo_p99_ms is not None or c.min_success_rate is not None:
            slo = SLO(p99_ms=c.slo_p99_ms, min_success_rate=c.min_success_rate)
            p99, hist = percentile_ms(total.latency, 99.0), total.latency
            verdict = evaluate(
                slo, p99, total.sent, total.completed, total.dropped, latency_at=lambda q: percentile_ms(hist, q)
            )
        lag = {
            "p50": percentile_ms(total.lag, 50.0),
            "p99": percentile_ms(total.lag, 99.0),
            "max": max_ms(total.lag),
        }
        per_s = total.completed / duration if duration > 0 else 0.0
        closed = self.plan.closed
        return {
            "url": c.url,
            "phase": self.phase.value,
            "error": self.error,
            "mode": self.mode(),
            "latencyFrom": "send" if closed else "schedule",
            "note": CLOSED_LOOP_NOTE if closed else None,
            "thinkTimeS": c.think_time if closed else None,
            "requestsLimit": c.requests,
            "batchSize": c.batch_size,
            "arrival": None if closed else c.arrival.value,
            "processes": c.processes,
            "startedAt": iso(self.started_at) if self.started_at else None,
            "finishedAt": iso(self.finished_at) if self.finished_at else None,
            **self.recorder.totals(),
            "durationS": round(duration, 3),
            "achievedRPS": round(total.sent / duration, 3) if duration > 0 else 0.0,
            "successRate": None if success is None else round(success, 5),
            "throughput": {"requestsPerS": round(per_s, 3), "imagesPerS": round(per_s * c.batch_size, 3)},
            "latencyMs": _rounded(latency_summary(total.latency, total.latency_sum)),
            "serviceTimeMs": _rounded(latency_summary(total.service, total.service_sum)),
            "sendLagMs": _rounded(lag),
            "stages": self.recorder.stage_summaries(self.stage_elapsed()),
            "slo": {
                "p99Ms": c.slo_p99_ms,
                "minSuccessRate": c.min_success_rate,
                "met": None if verdict is None else verdict.met,
                "successRate": None if success is None else round(success, 5),
                "message": None if verdict is None else verdict.message,
            },
            "serverTimingMs": self.recorder.server_timing_summary(),
            "server": self.recorder.server_summary(),
            "records": len(self.recorder.records),
        }


def _rounded(values: dict[str, float | None]) -> dict[str, float | None]:
    return {k: None if v is None else round(v, 3) for k, v in values.items()}


def _ms(value: float | None) -> str:
    return "      -" if value is None else f"{value:7.2f}"


def terminal_line(r: Record) -> str:
    """One line per record for the terminal view (with the server's CPU and GPU when they were measured)."""
    sr = "    -" if r.service_rate is None else f"{r.service_rate * 100:5.1f}"
    target = f"target={r.target_rps:8.1f}" if r.concurrency is None else f"clients={r.concurrency:7d}"
    line = (
        f"t={r.t:7.1f}s {target} rps={r.real_rps:8.1f} qps={r.real_qps:8.1f} "
        f"err={r.errors:<5d} drop={r.dropped:<5d} p50={_ms(r.p50_ms)}ms p99={_ms(r.p99_ms)}ms "
        f"max={_ms(r.max_ms)}ms avg99th={_ms(r.avg99th_ms)}ms SR={sr}%"
    )
    server = r.server
    if server.cpu_cores is not None:
        line += f" serverCPU={server.cpu_cores:5.2f}"
    if server.gpu_util_pct is not None:
        line += f" GPU={server.gpu_util_pct:5.1f}%"
    return line


async def run_async(config: LoadgenConfig, *, handle_signals: bool = False, in_process: bool = False) -> Run:
    """Run with the control API (unless disabled); return the finished :class:`Run`."""
    return await serve(Run(config, in_process=in_process), handle_signals=handle_signals)


async def serve(run: Run, *, handle_signals: bool = False) -> Run:
    """Execute ``run`` behind its control API, linger, and return it."""
    from kinfer.loadgen.control import ControlServer

    config = run.config
    server: ControlServer | None = None
    if config.control_port is not None:
        server = ControlServer(run, config.control_host, config.control_port, config.control_token)
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot serve the control API on {config.control_host}:{config.control_port}: {exc.strerror}"
            ) from None
        run.control_url = server.url
        print(f"kinfer loadgen: control API and dashboard on {server.url}", file=sys.stderr, flush=True)
    loop = asyncio.get_running_loop()
    if handle_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, run.stop)
    scraping = asyncio.Event()
    scraper = asyncio.create_task(run.scraper.run(lambda: run.t0, scraping))
    try:
        try:
            await run.execute()
        finally:
            scraping.set()
            await scraper
        await run.linger()
    finally:
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if server is not None:
            await server.close()
    return run


def run_to_end(run: Run) -> Run | None:
    """Serve ``run`` on uvloop where available (Ctrl-C/SIGTERM stop it gracefully); ``None`` when its
    configuration turned out invalid (the error is printed)."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is in the loadgen extra
        runner = asyncio.run
    try:
        result: Run = runner(serve(run, handle_signals=True))
    except ConfigError as exc:
        print(f"kinfer loadgen: error: {exc}", file=sys.stderr)
        return None
    return result


def run_main(config: LoadgenConfig) -> int:
    """Run on uvloop where available; the exit code of the CLI."""
    result = run_to_end(Run(config))
    if result is None:
        return 2
    summary = result.summary()
    if not config.quiet:
        lat = summary["latencyMs"]
        print(
            f"done: {result.phase.value} sent={summary['sent']} completed={summary['completed']} "
            f"errors={summary['errors']} dropped={summary['dropped']} "
            f"achievedRPS={summary['achievedRPS']} p50={lat['p50']}ms p99={lat['p99']}ms "
            f"max={lat['max']}ms",
            flush=True,
        )
    if result.phase is Phase.FAILED:
        return 1
    return 1 if summary["slo"]["met"] is False else 0
