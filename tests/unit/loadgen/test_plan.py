"""The rate plan: stage lookup, boundaries, loops, share and override."""

from __future__ import annotations

import math

import pytest

from kinfer.api.schedule import Stage
from kinfer.loadgen.plan import RatePlan

STAGES = [Stage(rps=10, duration="2s"), Stage(ramp_to=30, duration="2s"), Stage(rps=5, duration="1s")]


def test_rate_follows_constant_and_ramping_stages() -> None:
    p = RatePlan(STAGES, loop=False, end=5)
    assert p.target(1.0) == 10
    assert p.target(3.0) == pytest.approx(20)
    assert p.target(4.5) == 5
    assert p.target(5.0) == 0


def test_share_scales_this_processes_rate_and_override_replaces_the_schedule() -> None:
    p = RatePlan(STAGES, loop=False, end=5, share=0.25)
    assert p.rate(1.0) == 2.5
    p.override = 100
    assert p.target(1.0) == 100
    assert p.rate(4.5) == 25
    assert p.rate(6.0) == 0  # the run's end still holds


def test_spans_and_next_change_find_stage_boundaries() -> None:
    p = RatePlan(STAGES, loop=False, end=5)
    assert (p.span(2.5).index, p.span(2.5).start, p.span(2.5).end) == (1, 2.0, 4.0)
    assert p.next_change(0.0) == 2.0
    assert p.next_change(2.0) == 4.0
    assert p.next_change(5.0) == math.inf


def test_looping_schedule_repeats_until_the_end() -> None:
    p = RatePlan(STAGES, loop=True, end=12)
    assert p.span(6.0).index == 0
    assert p.span(6.0).start == 5.0
    assert p.target(9.5) == 5
    assert p.next_change(9.7) == 10.0
    assert p.next_change(11.5) == 12.0


def test_a_duration_longer_than_the_schedule_sends_nothing_after_it() -> None:
    p = RatePlan(STAGES, loop=False, end=8)
    assert p.target(6.0) == 0
    assert p.next_change(6.0) == 8


def test_a_closed_loop_splits_its_clients_and_the_override_is_a_number_of_clients() -> None:
    stages = [Stage(concurrency=5, duration="2s"), Stage(concurrency=2, duration="2s")]
    parts = [RatePlan(stages, loop=False, end=4, worker=i, workers=2) for i in range(2)]
    assert [p.clients(1.0) for p in parts] == [3, 2]
    assert [p.clients(3.0) for p in parts] == [1, 1]
    assert parts[0].target(1.0) == 0 and parts[0].clients(4.0) == 0
    parts[0].override = 7
    assert parts[0].concurrency(3.0) == 7 and parts[0].clients(3.0) == 4


def test_time_in_stage_counts_what_was_sent_every_loop_included() -> None:
    p = RatePlan(STAGES, loop=False, end=5)
    assert [p.time_in_stage(i, 3.0) for i in range(3)] == [2.0, 1.0, 0.0]
    assert [p.time_in_stage(i, 99.0) for i in range(3)] == [2.0, 2.0, 1.0]
    looped = RatePlan(STAGES, loop=True, end=12)
    assert [looped.time_in_stage(i, 11.0) for i in range(3)] == [5.0, 4.0, 2.0]
