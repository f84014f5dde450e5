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
