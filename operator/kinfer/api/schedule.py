"""Load schedules: a list of stages, each a constant rate or a linear ramp, optionally looped.

Shared by the LoadExperiment CRD (``spec.schedule``) and ``kinfer loadgen --schedule FILE``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

from pydantic import ConfigDict, Field, model_validator

from kinfer.api.common import Duration, Model, seconds


class Stage(Model):
    """One stage: ``{rps, duration}`` holds a rate, ``{rampTo, duration}`` ramps linearly to a rate."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["rps"]}, {"required": ["rampTo"]}]})

    rps: float | None = Field(default=None, ge=0, description="Constant offered rate (requests/s).")
    ramp_to: float | None = Field(
        default=None, ge=0, description="Ramp linearly from the previous stage's rate to this one."
    )
    duration: Duration = Field(description="How long the stage lasts (30s, 2m, ...).")

    @model_validator(mode="after")
    def _exactly_one_rate(self) -> Self:
        if (self.rps is None) == (self.ramp_to is None):
            raise ValueError("a stage needs exactly one of 'rps' or 'rampTo'")
        if seconds(self.duration) <= 0:
            raise ValueError(f"stage duration must be > 0, got {self.duration!r}")
        return self

    @property
    def duration_s(self) -> float:
        """Stage length in seconds."""
        return seconds(self.duration)

    @property
    def end_rps(self) -> float:
        """The rate at the end of the stage."""
        return self.rps if self.rps is not None else float(self.ramp_to or 0.0)


class Schedule(Model):
    """A schedule file for ``kinfer loadgen``: ``{stages: [...], loop: bool}`` or a bare list."""

    stages: list[Stage] = Field(min_length=1, description="Stages run in order.")
    loop: bool = Field(default=False, description="Repeat the stages until stopped.")

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
