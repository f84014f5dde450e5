"""Load schedules: a list of stages, each a constant rate, a linear ramp or (closed loop) a number of
clients, optionally looped.

Shared by the LoadExperiment CRD (``spec.schedule``) and ``kinfer loadgen --schedule FILE``. A schedule
is all-rate (open loop) or all-concurrency (closed loop), never a mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

from pydantic import ConfigDict, Field, model_validator

from kinfer.api.common import Duration, Model, seconds

#: Most clients one closed-loop stage (or a live override) may ask for.
MAX_CONCURRENCY = 100_000


class Stage(Model):
    """One stage: ``{rps, duration}`` holds a rate, ``{rampTo, duration}`` ramps linearly to a rate,
    ``{concurrency, duration}`` runs that many closed-loop clients (each sends its next request when
    its previous one completed)."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [{"required": ["rps"]}, {"required": ["rampTo"]}, {"required": ["concurrency"]}]
        }
    )

    rps: float | None = Field(default=None, ge=0, description="Constant offered rate (requests/s).")
    ramp_to: float | None = Field(
        default=None, ge=0, description="Ramp linearly from the previous stage's rate to this one."
    )
    concurrency: int | None = Field(
        default=None,
        ge=0,
        le=MAX_CONCURRENCY,
        description="Closed loop: clients sending back to back (plus the experiment's thinkTime).",
    )
    duration: Duration = Field(description="How long the stage lasts (30s, 2m, ...).")

    @model_validator(mode="after")
    def _exactly_one_rate(self) -> Self:
        if sum(v is not None for v in (self.rps, self.ramp_to, self.concurrency)) != 1:
            raise ValueError("a stage needs exactly one of 'rps', 'rampTo' or 'concurrency'")
        if seconds(self.duration) <= 0:
            raise ValueError(f"stage duration must be > 0, got {self.duration!r}")
        return self

    @property
    def duration_s(self) -> float:
        """Stage length in seconds."""
        return seconds(self.duration)

    @property
    def end_rps(self) -> float:
        """The rate at the end of the stage (0 for a closed-loop stage: it has no rate)."""
        return self.rps if self.rps is not None else float(self.ramp_to or 0.0)

    @property
    def closed(self) -> bool:
        """Whether this is a closed-loop stage (``concurrency``)."""
        return self.concurrency is not None


class Schedule(Model):
    """A schedule file for ``kinfer loadgen``: ``{stages: [...], loop: bool}`` or a bare list."""

    stages: list[Stage] = Field(min_length=1, description="Stages run in order.")
    loop: bool = Field(default=False, description="Repeat the stages until stopped.")

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        check_one_kind(self.stages)
        return self

    @classmethod
    def from_data(cls, data: Any) -> Schedule:
        """Accept a bare list of stages or a mapping with ``stages`` (and ``loop``)."""
        if isinstance(data, list):
            data = {"stages": data}
        return cls.model_validate(data)

    @property
    def duration_s(self) -> float:
        """One pass through the stages, in seconds."""
        return total_duration(self.stages)


def check_one_kind(stages: Sequence[Stage], field: str = "stages") -> None:
    """A schedule is all-rate or all-concurrency: ``ValueError`` naming the first stage that differs."""
    if not stages:
        return
    closed = stages[0].closed
    for index, stage in enumerate(stages):
        if stage.closed != closed:
            kind, other = ("concurrency", "rps/rampTo") if stage.closed else ("rps/rampTo", "concurrency")
            raise ValueError(
                f"{field}[{index}].{'concurrency' if stage.closed else 'rps'}: a schedule is all-rate or "
                f"all-concurrency; stage {index} has {kind}, stage 0 has {other}"
            )


def is_closed(stages: Sequence[Stage]) -> bool:
    """Whether a (one-kind) schedule is closed loop."""
    return bool(stages) and stages[0].closed


def total_duration(stages: Sequence[Stage]) -> float:
    """Sum of the stages' durations in seconds."""
    return sum(s.duration_s for s in stages)


def rate_at(stages: Sequence[Stage], t: float, loop: bool = False) -> tuple[int, float]:
    """(stage index, offered rate) at ``t`` seconds after the start; index -1 once the schedule ends.

    A ramp starts from the previous stage's end rate (0 for the first stage).
    """
    total = total_duration(stages)
    if loop and total > 0:
        t %= total
    start = 0.0
    previous = 0.0
    for index, stage in enumerate(stages):
        end = start + stage.duration_s
        if t < end:
            if stage.rps is not None:
                return index, stage.rps
            frac = (t - start) / stage.duration_s
            return index, previous + (stage.end_rps - previous) * frac
        previous = stage.end_rps
        start = end
    return -1, 0.0
