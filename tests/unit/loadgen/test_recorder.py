"""Records, window aggregates and stage summaries computed from generators' snapshots."""

from __future__ import annotations

import pytest

from kinfer.api.schedule import Stage
from kinfer.loadgen.engine import Snapshot
from kinfer.loadgen.plan import RatePlan
from kinfer.loadgen.recorder import Record, Recorder, window_aggregates
from kinfer.loadgen.stats import Bucket, record_seconds

PLAN = RatePlan([Stage(rps=100, duration="2s"), Stage(rps=50, duration="2s")], loop=False, end=4)


def bucket(sent: int, completed: int, latency_s: float, errors: int = 0, dropped: int = 0) -> Bucket:
    b = Bucket(sent=sent, completed=completed, dropped=dropped)
    for _ in range(completed):
        record_seconds(b.latency, latency_s)
    b.latency_sum = completed * latency_s
    if errors:
        b.errors["http_503"] = errors
    return b


def test_records_wait_for_every_generator_and_merge_them() -> None:
    rec = Recorder(PLAN, interval=1.0, window=60, generators=2)
    rec.add(0, Snapshot(0, 1.0, 50, 0, {0: bucket(50, 50, 0.010)}))
    assert rec.records == []
    rec.add(1, Snapshot(0, 1.0, 50, 0, {0: bucket(48, 47, 0.030, errors=1, dropped=2)}))
    [r] = rec.records
    assert (r.t, r.target_rps, r.real_rps, r.real_qps, r.errors, r.dropped) == (1.0, 100, 98, 97, 1, 2)
    assert r.p50_ms == pytest.approx(10, rel=1e-3)
    assert r.p99_ms == pytest.approx(30, rel=1e-3)
    assert r.errors_by_class == {"http_503": 1}


def test_a_generator_that_finished_early_does_not_hold_back_the_others() -> None:
    rec = Recorder(PLAN, interval=1.0, window=60, generators=2)
    rec.add(0, Snapshot(0, 0.5, 0, 0, {0: bucket(5, 5, 0.001)}, final=True))
    rec.add(1, Snapshot(0, 1.0, 50, 0, {0: bucket(50, 50, 0.001)}))
    rec.add(1, Snapshot(1, 1.0, 50, 0, {0: bucket(50, 50, 0.001)}))
    assert [r.real_rps for r in rec.records] == [55, 50]
    assert not rec.finished


def test_window_aggregates_average_rates_and_p99_over_the_window() -> None:
    rec = Recorder(PLAN, interval=1.0, window=2)
    for i, (sent, done, lat) in enumerate([(100, 100, 0.010), (100, 50, 0.030), (100, 100, 0.050)]):
        rec.add(0, Snapshot(i, 1.0, 100, 0, {0: bucket(sent, done, lat)}))
    last = rec.records[-1]
    assert last.avg_rps == 100
    assert last.avg_qps == 75
    assert last.service_rate == 0.75
    assert last.avg99th_ms == pytest.approx(40, rel=1e-3)


def test_avg99th_skips_records_without_responses() -> None:
    records = [Record(i, i + 1.0, 10, 10, 0, 0, 0, None, p99, None) for i, p99 in enumerate([20.0, None])]
    window_aggregates(records[-1], records)
    assert records[-1].avg99th_ms == 20.0
    assert records[-1].service_rate == 0.0


def test_stage_summaries_follow_the_stage_of_each_request() -> None:
    rec = Recorder(PLAN, interval=1.0, window=60)
    rec.add(0, Snapshot(0, 1.0, 100, 0, {0: bucket(100, 100, 0.001)}))
    rec.add(0, Snapshot(1, 1.0, 100, 0, {0: bucket(100, 99, 0.002, errors=1), 1: bucket(1, 1, 0.003)}))
    stages = rec.stage_summaries()
    assert [(s["index"], s["rps"], s["sent"], s["completed"], s["errors"]) for s in stages] == [
        (0, 100, 200, 199, 1),
        (1, 50, 1, 1, 0),
    ]
    assert stages[0]["serviceRate"] == pytest.approx(0.995)
    assert rec.totals()["sent"] == 201


def test_an_empty_final_snapshot_adds_no_record() -> None:
    rec = Recorder(PLAN, interval=1.0, window=60)
    rec.add(0, Snapshot(0, 1.0, 100, 0, {0: bucket(100, 100, 0.001)}))
    rec.add(0, Snapshot(1, 0.01, 0, 0, {}, final=True))
    assert len(rec.records) == 1
    assert rec.finished
