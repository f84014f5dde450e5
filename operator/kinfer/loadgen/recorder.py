"""Turns generators' interval snapshots into records, window aggregates and run/stage summaries.

Names follow DESIGN.md §4: per record ``realRPS`` (requests actually sent), ``realQPS`` (successful
responses), ``errors``, ``dropped``, ``p50Ms``/``p99Ms``/``maxMs`` (latency from the scheduled send time
of the responses completed in the interval); over the last ``window`` records ``avgRPS``, ``avgQPS``,
``serviceRate`` = avgQPS/avgRPS and ``avg99thMs`` = mean of the per-record p99; ``imagesPerS`` is
realQPS × the batch size, ``concurrency`` the closed loop's clients (empty in an open loop). Snapshots
of several generator processes are merged exactly before anything is computed. Each record also
carries the target server's resources over its interval (``serverCPU`` cores, ``serverMemoryMB``,
``serverGPUUtil`` %, ``serverGPUMemoryMB``; see :mod:`kinfer.loadgen.server_resources`), empty where
nothing was measured; the run and each stage get their means over the records that have them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from kinfer.api.loadexperiment import RECORD_COLUMNS as RECORD_COLUMNS
from kinfer.loadgen.engine import Snapshot
from kinfer.loadgen.plan import RatePlan
from kinfer.loadgen.server_resources import EMPTY, SERVER_FIELDS, ServerResources
from kinfer.loadgen.stats import Bucket, latency_summary, max_ms, mean_ms, percentile_ms

#: records.csv: DESIGN.md §9's columns first, then the server's resources.
CSV_COLUMNS: tuple[str, ...] = RECORD_COLUMNS + tuple(f for f in SERVER_FIELDS if f not in RECORD_COLUMNS)
#: summary.json's ``server`` keys, for the record fields of the same order.
SERVER_SUMMARY_KEYS = ("cpu", "memoryMB", "gpuUtil", "gpuMemoryMB")


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class Record:
    """One record interval, merged over all generator processes."""

    index: int
    t: float
    target_rps: float
    real_rps: float
    real_qps: float
    errors: int
    dropped: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    avg_rps: float = 0.0
    avg_qps: float = 0.0
    service_rate: float | None = None
    avg99th_ms: float | None = None
    errors_by_class: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    send_lag_p99_ms: float | None = None
    service_time_p99_ms: float | None = None
    server_timing_ms: dict[str, float] = field(default_factory=dict)
    concurrency: int | None = None
    images_per_s: float = 0.0
    server: ServerResources = EMPTY
    #: The stage most of the interval's requests belonged to (``None``: nothing was sent).
    stage: int | None = None

    def csv_values(self) -> dict[str, Any]:
        """The row for records.csv (empty cells where nothing was measured)."""
        return {k: ("" if v is None else v) for k, v in self.to_json().items() if k in CSV_COLUMNS}

    def to_json(self) -> dict[str, Any]:
        """The record as /api/records and /api/status show it (camelCase)."""
        return {
            "index": self.index,
            "t": round(self.t, 3),
            "targetRPS": round(self.target_rps, 3),
            "realRPS": round(self.real_rps, 3),
            "realQPS": round(self.real_qps, 3),
            "errors": self.errors,
            "dropped": self.dropped,
            "p50Ms": _round(self.p50_ms),
            "p99Ms": _round(self.p99_ms),
            "maxMs": _round(self.max_ms),
            "avgRPS": round(self.avg_rps, 3),
            "avgQPS": round(self.avg_qps, 3),
            "serviceRate": _round(self.service_rate, 4),
            "avg99thMs": _round(self.avg99th_ms),
            "errorsByClass": self.errors_by_class,
            "inFlight": self.in_flight,
            "sendLagP99Ms": _round(self.send_lag_p99_ms),
            "serviceTimeP99Ms": _round(self.service_time_p99_ms),
            "serverTimingMs": {k: round(v, 3) for k, v in self.server_timing_ms.items()},
            "concurrency": self.concurrency,
            "imagesPerS": round(self.images_per_s, 3),
            **self.server.to_json(),
        }


def stage_rps(plan: RatePlan, index: int) -> float | None:
    """The configured rate of stage ``index`` (a ramp's target rate; ``None`` for a closed-loop stage)."""
    stage = plan.stages[index]
    return None if stage.closed else stage.end_rps


class Recorder:
    """Collects snapshots from ``generators`` processes; emits a :class:`Record` per complete interval."""

    def __init__(
        self, plan: RatePlan, *, interval: float, window: int, generators: int = 1, batch_size: int = 1
    ) -> None:
        self.plan = plan
        self.batch_size = batch_size
        self.interval = interval
        self.window = max(1, window)
        self.generators = generators
        self.records: list[Record] = []
        self.total = Bucket()
        self.stages: dict[int, Bucket] = {}
        self.listeners: list[Callable[[Record], None]] = []
        #: The target server's resources for the record being emitted (``None``: not measured).
        self.resources: Callable[[], ServerResources] | None = None
        #: Per stage (and ``None``: the whole run), sums and counts of each resource field.
        self._server_sums: dict[int | None, list[list[float]]] = {}
        self._recent: deque[Record] = deque(maxlen=self.window)
        self._pending: dict[int, list[Snapshot]] = {}
        self._final_index: dict[int, int] = {}
        self._next = 0

    @property
    def finished(self) -> bool:
        """Whether every generator has sent its final snapshot."""
        return len(self._final_index) == self.generators

    def restart(self, index: int) -> None:
        """Take a new set of generators whose intervals are numbered from ``index`` on (capacity mode
        runs one set per probe); records, totals and stages carry on, the moving window starts over."""
        self._pending.clear()
        self._final_index.clear()
        self._recent.clear()
        self._next = index

    def add(self, worker: int, snapshot: Snapshot) -> None:
        """Take one generator's snapshot; emit every record that is now complete."""
        self._pending.setdefault(snapshot.index, []).append(snapshot)
        if snapshot.final:
            self._final_index[worker] = snapshot.index
        while self._complete(self._next):
            self._emit(self._next, self._pending.pop(self._next, []))
            self._next += 1
        if self.finished:
            for index in sorted(self._pending):
                self._emit(index, self._pending.pop(index))

    def _complete(self, index: int) -> bool:
        have = len(self._pending.get(index, ()))
        ended = sum(1 for last in self._final_index.values() if last < index)
        return have > 0 and have + ended >= self.generators

    def _emit(self, index: int, snapshots: list[Snapshot]) -> None:
        merged = Bucket()
        for snap in snapshots:
            for stage, bucket in snap.buckets.items():
                merged.merge(bucket)
                self.stages.setdefault(stage, Bucket()).merge(bucket)
        self.total.merge(merged)
        final = all(s.final for s in snapshots)
        if final and merged.sent == merged.completed == merged.dropped == merged.error_count == 0:
            return  # nothing happened after the previous record
        duration = max(s.duration for s in snapshots)
        activity: dict[int, int] = {}
        for snap in snapshots:
            for stage, bucket in snap.buckets.items():
                activity[stage] = activity.get(stage, 0) + bucket.sent + bucket.completed + bucket.dropped
        record = Record(
            index=len(self.records),
            t=index * self.interval + duration,
            target_rps=sum(s.target_rps for s in snapshots),
            real_rps=merged.sent / self.interval,
            real_qps=merged.completed / self.interval,
            errors=merged.error_count,
            dropped=merged.dropped,
            p50_ms=percentile_ms(merged.latency, 50.0),
            p99_ms=percentile_ms(merged.latency, 99.0),
            max_ms=max_ms(merged.latency),
            errors_by_class=dict(merged.errors),
            in_flight=sum(s.in_flight for s in snapshots),
            send_lag_p99_ms=percentile_ms(merged.lag, 99.0),
            service_time_p99_ms=percentile_ms(merged.service, 99.0),
            server_timing_ms=merged.server_timing_means_ms(),
            concurrency=sum(s.concurrency for s in snapshots) if self.plan.closed else None,
            images_per_s=merged.completed * self.batch_size / self.interval,
            server=self.resources() if self.resources is not None else EMPTY,
            stage=max(activity, key=lambda k: (activity[k], k)) if activity else None,
        )
        self._add_server(record)
        self._recent.append(record)
        window_aggregates(record, self._recent)
        self.records.append(record)
        for listener in self.listeners:
            listener(record)

    def _add_server(self, record: Record) -> None:
        values = (record.server.cpu_cores, record.server.memory_mb, record.server.gpu_util_pct,
                  record.server.gpu_memory_mb)  # fmt: skip
        for key in (None, record.stage) if record.stage is not None else (None,):
            sums = self._server_sums.setdefault(key, [[0.0, 0.0] for _ in values])
            for slot, value in zip(sums, values, strict=True):
                if value is not None:
                    slot[0] += value
                    slot[1] += 1

    def server_summary(self, stage: int | None = None) -> dict[str, float | None]:
        """``{cpu, memoryMB, gpuUtil, gpuMemoryMB}``: means over the records (of ``stage``, or the whole
        run) that have each value; ``None`` where none has."""
        sums = self._server_sums.get(stage) or [[0.0, 0.0] for _ in SERVER_SUMMARY_KEYS]
        digits = (3, 1, 1, 1)
        return {
            key: round(total / count, d) if count else None
            for key, (total, count), d in zip(SERVER_SUMMARY_KEYS, sums, digits, strict=True)
        }

    # -- summaries --------------------------------------------------------------------------------

    def stage_summaries(self, elapsed: float | None = None) -> list[dict[str, Any]]:
        """Per-stage summaries (stages reached so far, in schedule order). With ``elapsed`` (seconds the
        run has sent so far), ``durationS`` is the time actually spent in the stage (a run cut short by
        ``--requests`` or a stop spends less than the schedule says) and throughput is per that time."""
        out = []
        for index in sorted(self.stages):
            b = self.stages[index]
            stage = self.plan.stages[index]
            seconds = stage.duration_s if elapsed is None else self.plan.time_in_stage(index, elapsed)
            per_s = b.completed / seconds if seconds > 0 else None
            out.append(
                {
                    "index": index,
                    "rps": stage_rps(self.plan, index),
                    "concurrency": stage.concurrency,
                    "ramp": stage.ramp_to is not None,
                    "durationS": round(seconds, 3),
                    "requestsPerS": _round(per_s),
                    "imagesPerS": _round(None if per_s is None else per_s * self.batch_size),
                    "sent": b.sent,
                    "completed": b.completed,
                    "errors": b.error_count,
                    "dropped": b.dropped,
                    "latencyMs": _rounded(latency_summary(b.latency, b.latency_sum)),
                    "serviceRate": _round(b.completed / b.sent if b.sent else None, 4),
                    "server": self.server_summary(index),
                }
            )
        return out

    def totals(self) -> dict[str, Any]:
        """Whole-run counts so far."""
        t = self.total
        return {
            "sent": t.sent,
            "completed": t.completed,
            "errors": t.error_count,
            "errorsByClass": dict(t.errors),
            "dropped": t.dropped,
        }

    def server_timing_summary(self) -> dict[str, dict[str, float | None]]:
        """``{stageName: {mean, p99}}`` over the whole run, from the server's Server-Timing headers."""
        return {
            name: {
                "mean": _round(mean_ms(h, self.total.server_timing_sum.get(name, 0.0))),
                "p99": _round(percentile_ms(h, 99.0)),
            }
            for name, h in sorted(self.total.server_timing.items())
        }


def _rounded(values: dict[str, float | None]) -> dict[str, float | None]:
    return {k: _round(v) for k, v in values.items()}


def window_aggregates(record: Record, recent: deque[Record] | list[Record]) -> None:
    """Fill ``record``'s window fields from the last records (``record`` included)."""
    record.avg_rps = fmean(r.real_rps for r in recent)
    record.avg_qps = fmean(r.real_qps for r in recent)
    record.service_rate = record.avg_qps / record.avg_rps if record.avg_rps > 0 else None
    p99s = [r.p99_ms for r in recent if r.p99_ms is not None and not math.isnan(r.p99_ms)]
    record.avg99th_ms = fmean(p99s) if p99s else None

