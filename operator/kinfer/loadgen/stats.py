"""Mergeable measurement buckets built on HdrHistogram (values recorded in microseconds).

A generator fills one :class:`Bucket` per (record interval, stage); the recorder merges buckets from
all processes exactly (histogram addition) into records, stage summaries and the whole run.
Percentiles are computed on read.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

#: Histogram range: 1 µs .. 1 hour, 3 significant figures.
LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_FIGURES = 3

#: Percentiles in a latency summary (name -> percentile).
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


def new_histogram() -> HdrHistogram:
    """An empty histogram with kinfer's range and precision."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)


def record_seconds(hist: HdrHistogram, seconds: float) -> None:
    """Record a duration given in seconds (clamped into the histogram's range)."""
    us = int(seconds * 1e6)
    hist.record_value(LOWEST_US if us < LOWEST_US else HIGHEST_US if us > HIGHEST_US else us)


def percentile_ms(hist: HdrHistogram, percentile: float) -> float | None:
    """The value at ``percentile`` in milliseconds, ``None`` when nothing was recorded."""
    if hist.get_total_count() == 0:
        return None
    return float(hist.get_value_at_percentile(percentile)) / 1000.0


def max_ms(hist: HdrHistogram) -> float | None:
    """Largest recorded value in milliseconds (``None`` when empty)."""
    return None if hist.get_total_count() == 0 else float(hist.get_max_value()) / 1000.0


def mean_ms(hist: HdrHistogram, total_seconds: float) -> float | None:
    """Mean in milliseconds from the exact sum of the recorded values (``None`` when empty).

    hdrh's own ``get_mean_value`` walks every bucket up to the maximum, far too slow to call each second.
    """
    count = hist.get_total_count()
    return None if count == 0 else total_seconds * 1000.0 / count


def latency_summary(hist: HdrHistogram, total_seconds: float) -> dict[str, float | None]:
    """``{p50, p90, p99, p999, max, mean}`` in milliseconds, as summary.json lists them."""
    out: dict[str, float | None] = {name: percentile_ms(hist, p) for name, p in PERCENTILES.items()}
    out["max"] = max_ms(hist)
    out["mean"] = mean_ms(hist, total_seconds)
    return out


def copy_histogram(hist: HdrHistogram) -> HdrHistogram:
    """An independent copy (merging into an empty histogram is exact)."""
    out = new_histogram()
    out.add(hist)
    return out


@dataclass
class Bucket:
    """What happened in one record interval to the requests of one stage.

    ``latency`` is completion - scheduled send time, ``service`` completion - actual send, ``lag``
    actual - scheduled send; latencies are recorded for successful responses only, errors are counted
    by class (``http_<status>``, ``timeout``, ``connection``, ``aborted``). The ``*_sum`` fields hold
    the exact sums of the recorded durations in seconds (for means).
    """

    sent: int = 0
    completed: int = 0
    dropped: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latency: HdrHistogram = field(default_factory=new_histogram)
    service: HdrHistogram = field(default_factory=new_histogram)
    lag: HdrHistogram = field(default_factory=new_histogram)
    server_timing: dict[str, HdrHistogram] = field(default_factory=dict)
    latency_sum: float = 0.0
    service_sum: float = 0.0
    server_timing_sum: dict[str, float] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        """All errors, every class."""
        return sum(self.errors.values())

    def merge(self, other: Bucket) -> None:
        """Add ``other`` into this bucket (exact: counts and histogram buckets add)."""
        self.sent += other.sent
        self.completed += other.completed
        self.dropped += other.dropped
        self.errors.update(other.errors)
        self.latency.add(other.latency)
        self.service.add(other.service)
        self.lag.add(other.lag)
        self.latency_sum += other.latency_sum
        self.service_sum += other.service_sum
        for name, total in other.server_timing_sum.items():
            self.server_timing_sum[name] = self.server_timing_sum.get(name, 0.0) + total
        for name, hist in other.server_timing.items():
            mine = self.server_timing.get(name)
            if mine is None:
                self.server_timing[name] = copy_histogram(hist)
            else:
                mine.add(hist)

    def record_server_timing(self, header: str) -> None:
        """Parse a ``Server-Timing`` header (``name;dur=ms, ...``) into per-stage histograms."""
        for name, ms in parse_server_timing(header):
            hist = self.server_timing.get(name)
            if hist is None:
                hist = self.server_timing[name] = new_histogram()
                self.server_timing_sum[name] = 0.0
            record_seconds(hist, ms / 1000.0)
            self.server_timing_sum[name] += ms / 1000.0

    def server_timing_means_ms(self) -> dict[str, float]:
        """Mean duration per server stage, milliseconds."""
        out = {}
        for name, hist in self.server_timing.items():
            mean = mean_ms(hist, self.server_timing_sum.get(name, 0.0))
            if mean is not None:
                out[name] = mean
        return out

    def encode(self) -> dict[str, Any]:
        """A picklable, compact form (histograms in HdrHistogram's compressed encoding)."""
        return {
            "sent": self.sent,
            "completed": self.completed,
            "dropped": self.dropped,
            "errors": dict(self.errors),
            "latency": self.latency.encode(),
            "service": self.service.encode(),
            "lag": self.lag.encode(),
            "serverTiming": {k: v.encode() for k, v in self.server_timing.items()},
            "sums": [self.latency_sum, self.service_sum, self.server_timing_sum],
        }

    @classmethod
    def decode(cls, data: dict[str, Any]) -> Bucket:
        """Inverse of :meth:`encode`."""
        return cls(
            sent=data["sent"],
            completed=data["completed"],
            dropped=data["dropped"],
            errors=Counter(data["errors"]),
            latency=_decode(data["latency"]),
            service=_decode(data["service"]),
            lag=_decode(data["lag"]),
            server_timing={k: _decode(v) for k, v in data["serverTiming"].items()},
            latency_sum=data["sums"][0],
            service_sum=data["sums"][1],
            server_timing_sum=dict(data["sums"][2]),
        )


def _decode(encoded: bytes) -> HdrHistogram:
    # decode() keeps the encoder's range; add into a standard histogram so merges stay compatible.
    out = new_histogram()
    if encoded:
        out.add(HdrHistogram.decode(encoded))
    return out


def parse_server_timing(header: str) -> list[tuple[str, float]]:
    """``queue;dur=0.1, infer;dur=10.2`` -> ``[("queue", 0.1), ("infer", 10.2)]``; entries without a
    valid ``dur`` are skipped (the header's other parameters, like ``desc``, are ignored)."""
    out: list[tuple[str, float]] = []
    for entry in header.split(","):
        parts = entry.split(";")
        name = parts[0].strip()
        if not name:
            continue
        for param in parts[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "dur":
                with contextlib.suppress(ValueError):
                    out.append((name, float(value.strip().strip('"'))))
                break
    return out
