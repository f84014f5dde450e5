"""Buckets merge exactly, survive encoding, and parse the server's Server-Timing header."""

from __future__ import annotations

import random

import pytest

from kinfer.loadgen.stats import Bucket, latency_summary, parse_server_timing, percentile_ms, record_seconds


def filled(values: list[float]) -> Bucket:
    b = Bucket()
    for v in values:
        b.sent += 1
        b.completed += 1
        record_seconds(b.latency, v)
        b.latency_sum += v
    return b


def test_merging_buckets_equals_recording_everything_in_one() -> None:
    rng = random.Random(5)
    values = [rng.lognormvariate(-6, 1.5) for _ in range(20000)]
    parts = [filled(values[i::3]) for i in range(3)]
    merged = Bucket()
    for part in parts:
        merged.merge(part)
    whole = filled(values)
    assert merged.sent == whole.sent == 20000
    assert merged.latency.get_total_count() == whole.latency.get_total_count()
    for p in (50, 90, 99, 99.9, 100):
        assert percentile_ms(merged.latency, p) == percentile_ms(whole.latency, p)
    assert list(merged.latency.counts) == list(whole.latency.counts)
    assert merged.latency_sum == pytest.approx(whole.latency_sum)


def test_encoded_buckets_decode_to_identical_counts() -> None:
    b = filled([0.001, 0.002, 0.5, 3.0])
    b.errors["timeout"] += 2
    b.dropped = 4
    b.record_server_timing("infer;dur=10.5, queue;dur=0.5")
    back = Bucket.decode(b.encode())
    assert list(back.latency.counts) == list(b.latency.counts)
    assert back.errors == b.errors
    assert back.dropped == 4
    assert back.server_timing_means_ms() == pytest.approx({"infer": 10.5, "queue": 0.5})


def test_latency_summary_is_in_milliseconds_with_exact_mean() -> None:
    b = filled([0.001] * 99 + [0.1])
    summary = latency_summary(b.latency, b.latency_sum)
    assert summary["p50"] == pytest.approx(1.0, rel=1e-3)
    assert summary["p99"] == pytest.approx(1.0, rel=1e-3)
    assert summary["max"] == pytest.approx(100.0, rel=1e-3)
    assert summary["mean"] == pytest.approx(1.99)


def test_empty_histograms_summarise_to_none() -> None:
    b = Bucket()
    assert latency_summary(b.latency, 0.0) == dict.fromkeys(("p50", "p90", "p99", "p999", "max", "mean"))


def test_server_timing_header_parsing() -> None:
    header = 'queue;dur=0.1, preprocess;desc="resize";dur=2.3, infer;dur=10.2,postprocess;dur=0.4, cache'
    assert parse_server_timing(header) == [
        ("queue", 0.1),
        ("preprocess", 2.3),
        ("infer", 10.2),
        ("postprocess", 0.4),
    ]
    assert parse_server_timing("bad;dur=x, ;dur=1") == []
