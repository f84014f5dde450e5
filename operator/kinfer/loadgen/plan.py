"""The offered rate over time: a schedule of stages, optionally looped, and a live override.

A generator process owns ``share`` of the total rate (``--processes N`` gives each ``1/N``), so the sum
over processes is the schedule's rate.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from kinfer.api.schedule import Stage, rate_at


@dataclass(frozen=True)
class StageSpan:
    """Where a stage lies in time: its index in the schedule and its [start, end) in seconds."""

    index: int
    start: float
    end: float


class RatePlan:
    """Rate (requests/s) as a function of seconds since the start of the run.

    ``override`` (set by the control API) replaces the schedule's rate while not ``None``; the stage
    bookkeeping (which stage a request belongs to, when the run ends) always follows the schedule.
    """

    def __init__(self, stages: Sequence[Stage], *, loop: bool, end: float, share: float = 1.0) -> None:
        if not stages:
            raise ValueError("a rate plan needs at least one stage")
        self.stages = list(stages)
        self.loop = loop
        self.end = end
        self.share = share
        self.override: float | None = None
        self._bounds: list[float] = []
        total = 0.0
        for stage in self.stages:
            total += stage.duration_s
            self._bounds.append(total)
        self.period = total

    def scheduled_rate(self, t: float) -> float:
        """The schedule's total rate at ``t`` (all processes together), ignoring the override."""
        if t >= self.end or t < 0:
            return 0.0
        index, rate = rate_at(self.stages, t, self.loop)
        return rate if index >= 0 else 0.0

    def target(self, t: float) -> float:
        """The total target rate at ``t``: the override if set, else the schedule."""
        if t >= self.end or t < 0:
            return 0.0
        return self.override if self.override is not None else self.scheduled_rate(t)

    def rate(self, t: float) -> float:
        """This process's rate at ``t``."""
        return self.target(t) * self.share

    def span(self, t: float) -> StageSpan:
        """The stage in effect at ``t`` (the last stage once a non-looping schedule has ended)."""
        base = 0.0
        local = t
        if self.loop and self.period > 0:
            cycles = math.floor(t / self.period)
            base = cycles * self.period
            local = t - base
        index = bisect.bisect_right(self._bounds, local)
        index = min(index, len(self.stages) - 1)
        start = self._bounds[index - 1] if index > 0 else 0.0
        return StageSpan(index, base + start, min(base + self._bounds[index], self.end))

    def next_change(self, t: float) -> float:
        """The first stage boundary (or the end) strictly after ``t``: a constant rate holds until then."""
        if t >= self.end:
            return math.inf
        if not self.loop and t >= self.period:
            return self.end
        span = self.span(t)
        end = span.end if span.end > t else span.end + self.period
        return min(end, self.end)
