"""Encoded histograms merge exactly: the merged percentiles are those of all the values together."""

from __future__ import annotations

import pytest
from hdrh.histogram import HdrHistogram

from kinfer import histograms
from kinfer.controller.lexp_status import merge


def _hist(values_us: list[int]) -> HdrHistogram:
    h = HdrHistogram(1, 3_600_000_000, 3)
    for v in values_us:
        h.record_value(v)
    return h


FAST = [1000] * 990 + [2000] * 10  # one pod: p99 = 1 ms
SLOW = [1000] * 900 + [50_000] * 100  # other pod: p99 = 50 ms


def test_merge_equals_the_histogram_of_all_values() -> None:
    merged = histograms.merge([histograms.encode(_hist(FAST)), histograms.encode(_hist(SLOW))])
    assert merged is not None
    expected = histograms.percentiles_ms(_hist(FAST + SLOW))
    assert histograms.percentiles_ms(merged) == expected
    assert expected["p99"] == pytest.approx(50.0, rel=0.01) and expected["p50"] == pytest.approx(1.0, rel=0.01)


def test_garbage_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not an encoded HdrHistogram"):
        histograms.decode("not base64 at all")


def _snapshot(values: list[int]) -> dict[str, object]:
    h = histograms.encode(_hist(values))
    p = histograms.percentiles_ms(_hist(values))
    stage = {"index": 0, "rps": 10, "sent": len(values), "completed": len(values), "latencyMs": p}
    return {
        "phase": "Running", "sent": len(values), "completed": len(values), "errors": 0, "dropped": 0,
        "latencyMs": {**p, "mean": 1.0}, "stages": [stage], "histograms": {"latency": h, "stages": {"0": h}},
    }  # fmt: skip


def test_the_operator_merges_pods_exactly_not_by_the_worst_pod() -> None:
    fast = [1000] * 1000
    slow = [1000] * 985 + [80_000] * 15  # alone: p99 = 80 ms; with the fast pod: 1.5 % of 2000 -> p99 = 1 ms
    merged = merge([_snapshot(fast), _snapshot(slow)])
    exact = histograms.percentiles_ms(_hist(fast + slow))
    assert merged["latencyMs"]["p99"] == exact["p99"] == pytest.approx(1.0, rel=0.01)
    assert merged["stages"][0]["latencyMs"]["p99"] == exact["p99"]
    assert merged["latencyMs"]["max"] == pytest.approx(80.0, rel=0.01)


def test_without_histograms_the_merge_keeps_the_worst_pod_as_an_upper_bound() -> None:
    a, b = _snapshot([1000] * 1000), _snapshot([1000] * 985 + [80_000] * 15)
    for s in (a, b):
        del s["histograms"]
    assert merge([a, b])["stages"][0]["latencyMs"]["p99"] == pytest.approx(80.0, rel=0.01)
