"""Latency histograms on the wire: HdrHistogram's compressed base64 form, merged exactly.

Generators record latencies in microseconds into HdrHistograms; a generator's control API can hand
them out encoded, and whoever runs several generators (the operator, for ``parallelism`` > 1) adds them
up — exact percentiles over all pods instead of the worst pod's. Shared by ``kinfer.loadgen`` and
``kinfer.controller``, which must not import each other.
"""

from __future__ import annotations

from collections.abc import Sequence

from hdrh.histogram import HdrHistogram

#: Percentiles reported (name -> percentile), as summary.json names them.
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
#: Recorded unit per millisecond (generators record microseconds).
UNITS_PER_MS = 1000.0


def encode(hist: HdrHistogram) -> str:
    """The histogram as compressed base64 text (a few KB)."""
    encoded: bytes = hist.encode()
    return encoded.decode("ascii")


def decode(text: str) -> HdrHistogram:
    """A histogram from :func:`encode`'s text; ``ValueError`` when it is not one."""
    try:
        hist: HdrHistogram = HdrHistogram.decode(text.encode("ascii"))
    except Exception as exc:  # hdrh raises assorted errors on garbage input
        raise ValueError(f"not an encoded HdrHistogram: {exc}") from exc
    return hist


def merge(encoded: Sequence[str]) -> HdrHistogram | None:
    """The exact sum of several encoded histograms (None for none)."""
    if not encoded:
        return None
    total = decode(encoded[0])
    for text in encoded[1:]:
        total.add(decode(text))
    return total


def percentiles_ms(hist: HdrHistogram | None) -> dict[str, float]:
    """``{p50, p90, p99, p999, max}`` in milliseconds; empty when nothing was recorded."""
    if hist is None or hist.get_total_count() == 0:
        return {}
    out = {name: round(hist.get_value_at_percentile(p) / UNITS_PER_MS, 3) for name, p in PERCENTILES.items()}
    out["max"] = round(hist.get_max_value() / UNITS_PER_MS, 3)
    return out
