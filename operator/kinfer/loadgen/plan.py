"""The offered rate over time: a schedule of stages, optionally looped, and a live override.

A generator process owns ``share`` of the total rate (``--processes N`` gives each ``1/N``), so the sum
over processes is the schedule's rate. A closed-loop schedule (stages of ``concurrency``) has no rate:
its clients are split between processes instead (process ``worker`` of ``workers`` runs its part).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from kinfer.api.schedule import Stage, is_closed, rate_at


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

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        loop: bool,
        end: float,
        share: float = 1.0,
        worker: int = 0,
        workers: int = 1,
    ) -> None:
        if not stages:
            raise ValueError("a rate plan needs at least one stage")
        self.stages = list(stages)
        self.loop = loop
        self.end = end
        self.share = share
        self.worker = worker
        self.workers = workers
        #: Closed loop: ``override`` is a number of clients, not a rate.
        self.closed = is_closed(self.stages)
        self.override: float | None = None
        self._bounds: list[float] = []
        total = 0.0
        for stage in self.stages:
            total += stage.duration_s
            self._bounds.append(total)
        self.period = total

    def scheduled_rate(self, t: float) -> float:
        """The schedule's total rate at ``t`` (all processes together), ignoring the override."""
        if t >= self.end or t < 0 or self.closed:
            return 0.0
        index, rate = rate_at(self.stages, t, self.loop)
        return rate if index >= 0 else 0.0

    def target(self, t: float) -> float:
        """The total target rate at ``t``: the override if set, else the schedule (0 in a closed loop)."""
        if t >= self.end or t < 0 or self.closed:
            return 0.0
        return self.override if self.override is not None else self.scheduled_rate(t)

    def concurrency(self, t: float) -> int:
        """Closed loop: the total number of clients at ``t`` (the override if set, else the stage's)."""
        if t >= self.end or t < 0 or not self.closed:
            return 0
        if self.override is not None:
            return round(self.override)
        return self.stages[self.span(t).index].concurrency or 0

    def clients(self, t: float) -> int:
        """Closed loop: this process's part of :meth:`concurrency` (the first ``total % workers``
        processes run one more)."""
        total = self.concurrency(t)
        return total // self.workers + (1 if self.worker < total % self.workers else 0)

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

    def time_in_stage(self, index: int, until: float) -> float:
        """Seconds of [0, ``until``) (and before the end) that fall in stage ``index``, every loop counted."""
        until = min(until, self.end)
        if until <= 0:
            return 0.0
        start = self._bounds[index - 1] if index > 0 else 0.0
        end = self._bounds[index]
        cycles, rest = 0, until
        if self.loop and self.period > 0:
            cycles = math.floor(until / self.period)
            rest = until - cycles * self.period
        return cycles * (end - start) + min(max(rest - start, 0.0), end - start)

    def next_change(self, t: float) -> float:
        """The first stage boundary (or the end) strictly after ``t``: a constant rate holds until then."""
        if t >= self.end:
            return math.inf
        if not self.loop and t >= self.period:
            return self.end
        span = self.span(t)
        end = span.end if span.end > t else span.end + self.period
        return min(end, self.end)
