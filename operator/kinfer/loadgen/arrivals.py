"""Scheduled send times: a pure function of the arrival kind, the seed and the rate plan.

Each arrival needs one unit of "work" (``poisson``: an Exp(1) draw, ``uniform``: exactly 1); work
accrues at the current rate, which is held constant over segments no longer than ``tick`` and never
across a stage boundary. For a piecewise-constant rate this is exact (a Poisson process is memoryless;
a uniform process keeps its phase), ramps are followed tick by tick, and a live rate change applies
from the moment it happens (:meth:`Arrivals.rebase`). ``burst`` re-creates the 2019 seed: at every whole
second, the whole second's requests at once.
"""

from __future__ import annotations

import random
from enum import StrEnum
from typing import Protocol


class ArrivalKind(StrEnum):
    """How send times are spread."""

    POISSON = "poisson"
    UNIFORM = "uniform"
    BURST = "burst"


class RateSource(Protocol):
    """What arrivals need from a plan: the rate at ``t`` and when it may next change."""

    def rate(self, t: float) -> float: ...

    def next_change(self, t: float) -> float: ...


#: Longest segment over which a (ramping) rate is held constant, seconds.
DEFAULT_TICK = 0.05


class Arrivals:
    """Produces events ``(t, is_arrival)`` in seconds since the start; non-arrivals are checkpoints.

    The caller sleeps until each event's time and sends a request when ``is_arrival``. Checkpoints
    (at most ``tick`` apart) give it a chance to notice a new rate without waiting for an arrival.
    """

    def __init__(
        self,
        kind: ArrivalKind,
        plan: RateSource,
        *,
        seed: int | None = None,
        phase: float = 0.0,
        tick: float = DEFAULT_TICK,
    ) -> None:
        self.kind = kind
        self._plan = plan
        self._rng = random.Random(seed)
        self._tick = tick
        self._pos = 0.0
        self._seg_rate = 0.0
        self._pending_arrival = False
        # uniform: ``phase`` in [0, 1) spreads several processes' sends evenly; poisson: a fresh draw.
        self._remaining = self._draw() if kind is ArrivalKind.POISSON else phase
        self._burst_left = 0
        self._burst_time = 0.0
        self._next_burst = 0.0
        self._carry = 0.0

    def _draw(self) -> float:
        return self._rng.expovariate(1.0) if self.kind is ArrivalKind.POISSON else 1.0

    def next_event(self) -> tuple[float, bool]:
        """The next event after the previous one (times never decrease)."""
        if self.kind is ArrivalKind.BURST:
            return self._next_burst_event()
        pos = self._pos
        rate = self._plan.rate(pos)
        seg_end = min(pos + self._tick, self._plan.next_change(pos))
        self._seg_rate = rate
        if rate > 0:
            t = pos + self._remaining / rate
            if t <= seg_end:
                self._pos = t
                self._pending_arrival = True
                self._remaining = self._draw()
                return t, True
            self._remaining -= rate * (seg_end - pos)
        self._pos = seg_end
        self._pending_arrival = False
        return seg_end, False

    def rebase(self, t: float) -> None:
        """The rate changed at ``t``, before the last event returned: forget that event, go on from ``t``.

        The work done between the previous event and ``t`` at the old rate is kept, so neither process
        kind gains or loses arrivals by the change. ``burst`` keeps its whole-second rhythm (the seed's).
        """
        if self.kind is ArrivalKind.BURST or t >= self._pos:
            return
        left = self._seg_rate * (self._pos - t)
        self._remaining = left if self._pending_arrival else self._remaining + left
        self._remaining = max(self._remaining, 0.0)
        self._pos = t
        self._pending_arrival = False

    def _next_burst_event(self) -> tuple[float, bool]:
        if self._burst_left > 0:
            self._burst_left -= 1
            return self._burst_time, True
        self._burst_time = self._next_burst
        self._next_burst += 1.0
        expected = self._carry + self._plan.rate(self._burst_time)
        self._burst_left = int(expected)
        self._carry = expected - self._burst_left
        return self._burst_time, False
