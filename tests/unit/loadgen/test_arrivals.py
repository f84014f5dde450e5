"""Arrivals are a pure seeded function of the rate plan: statistically right, exactly reproducible."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from kinfer.api.schedule import Stage
from kinfer.loadgen.arrivals import ArrivalKind, Arrivals
from kinfer.loadgen.plan import RatePlan


def plan(*stages: Stage, loop: bool = False, end: float | None = None) -> RatePlan:
    total = sum(s.duration_s for s in stages)
    return RatePlan(list(stages), loop=loop, end=total if end is None else end)


def arrival_times(arrivals: Arrivals, end: float) -> list[float]:
    out: list[float] = []
    while True:
        t, is_arrival = arrivals.next_event()
        if t >= end:
            return out
        if is_arrival:
            out.append(t)


def test_poisson_arrivals_are_reproducible_for_a_seed_and_differ_across_seeds() -> None:
    p = plan(Stage(rps=200, duration="5s"))
    a = arrival_times(Arrivals(ArrivalKind.POISSON, p, seed=7), 5)
    b = arrival_times(Arrivals(ArrivalKind.POISSON, p, seed=7), 5)
    c = arrival_times(Arrivals(ArrivalKind.POISSON, p, seed=8), 5)
    assert a == b
    assert a != c


def test_poisson_count_and_gaps_match_an_exponential_distribution() -> None:
    rate, seconds = 500.0, 40.0
    times = arrival_times(Arrivals(ArrivalKind.POISSON, plan(Stage(rps=rate, duration="40s")), seed=1), seconds)
    expected = rate * seconds
    assert abs(len(times) - expected) < 5 * math.sqrt(expected)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(1 / rate, rel=0.03)
    # exponential: standard deviation equals the mean, and P(gap > mean) = 1/e
    assert statistics.pstdev(gaps) / mean == pytest.approx(1.0, abs=0.05)
    share_long = sum(g > mean for g in gaps) / len(gaps)
    assert share_long == pytest.approx(math.exp(-1), abs=0.02)


def test_uniform_arrivals_are_evenly_spaced_from_time_zero() -> None:
    times = arrival_times(Arrivals(ArrivalKind.UNIFORM, plan(Stage(rps=100, duration="2s"))), 2)
    assert len(times) == 200
    assert times[0] == 0.0
    assert all(b - a == pytest.approx(0.01) for a, b in itertools.pairwise(times))


def test_uniform_processes_with_phases_interleave_into_one_even_stream() -> None:
    stage = Stage(rps=100, duration="1s")
    merged = sorted(
        t
        for i in range(2)
        for t in arrival_times(
            Arrivals(ArrivalKind.UNIFORM, RatePlan([stage], loop=False, end=1, share=0.5), phase=i / 2), 1
        )
    )
    assert len(merged) == 100
    assert all(b - a == pytest.approx(0.01) for a, b in itertools.pairwise(merged))


def test_burst_sends_each_seconds_requests_at_the_whole_second() -> None:
    times = arrival_times(Arrivals(ArrivalKind.BURST, plan(Stage(rps=30, duration="3s"))), 3)
    assert times == [0.0] * 30 + [1.0] * 30 + [2.0] * 30


def test_burst_carries_fractional_rates_across_seconds() -> None:
    times = arrival_times(Arrivals(ArrivalKind.BURST, plan(Stage(rps=2.5, duration="4s"))), 4)
    assert len(times) == 10


def test_a_new_stage_starts_on_time_even_after_a_very_slow_stage() -> None:
    p = plan(Stage(rps=0.01, duration="1s"), Stage(rps=1000, duration="1s"))
    times = arrival_times(Arrivals(ArrivalKind.POISSON, p, seed=3), 2)
    assert sum(1 for t in times if t >= 1) == pytest.approx(1000, abs=5 * math.sqrt(1000))
    assert min(t for t in times if t >= 1) < 1.02


def test_ramp_offers_the_integral_of_the_rate() -> None:
    p = plan(Stage(rps=0, duration="1s"), Stage(ramp_to=400, duration="4s"))
    times = arrival_times(Arrivals(ArrivalKind.UNIFORM, p), 5)
    assert len(times) == pytest.approx(800, rel=0.03)  # triangle: 400 * 4 / 2
    first_half = sum(1 for t in times if t < 3)
    assert first_half == pytest.approx(200, rel=0.1)  # the ramp's first half carries a quarter


def test_zero_rate_produces_only_checkpoints() -> None:
    arrivals = Arrivals(ArrivalKind.POISSON, plan(Stage(rps=0, duration="1s")), seed=1)
    events = []
    while (event := arrivals.next_event())[0] < 1:
        events.append(event)
    assert events
    assert not any(is_arrival for _, is_arrival in events)


def test_rate_override_applies_from_the_moment_of_the_change() -> None:
    p = plan(Stage(rps=1, duration="10s"))
    arrivals = Arrivals(ArrivalKind.UNIFORM, p, phase=0.5)
    assert arrivals.next_event() == (0.05, False)  # checkpoint: the first send is due at 0.5 s
    # the caller wakes at 0.05 s: nothing new; it sets 1000 rps at 0.07 s, before the next checkpoint
    assert arrivals.next_event() == (pytest.approx(0.1), False)
    p.override = 1000
    arrivals.rebase(0.07)
    times = arrival_times(arrivals, 1.07)
    assert times[0] == pytest.approx(0.07, abs=0.002)
    assert len(times) == pytest.approx(1000, abs=2)


def test_rebase_keeps_the_work_already_done_at_the_old_rate() -> None:
    p = plan(Stage(rps=10, duration="10s"))
    arrivals = Arrivals(ArrivalKind.UNIFORM, p, phase=1.0)
    t, is_arrival = arrivals.next_event()  # first arrival would be at 0.1 s (one unit of work)
    assert is_arrival is False  # a checkpoint at 0.05 s comes first
    t, is_arrival = arrivals.next_event()
    assert (t, is_arrival) == (pytest.approx(0.1), True)
    # halve the rate at 0.075 s: 0.25 of the work is left, at 5 rps that takes 0.05 s
    p.override = 5
    arrivals.rebase(0.075)
    assert arrival_times(arrivals, 0.2)[0] == pytest.approx(0.125)
