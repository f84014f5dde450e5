"""The LoadExperiment phase machine: what the next phase is, given the current one and what was observed.

Pure and explicit (a ``match`` over :class:`Phase`): the daemon observes, asks :func:`next_phase`, and
acts on the answer. Terminal phases never change (a restarted operator does not rerun an experiment).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    """``status.phase`` of a LoadExperiment (DESIGN §3)."""

    PENDING = "Pending"
    WAITING_FOR_TARGET = "WaitingForTarget"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STOPPED = "Stopped"

    @property
    def terminal(self) -> bool:
        """The experiment is over."""
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.STOPPED)

    @classmethod
    def of(cls, value: object) -> Phase:
        """The phase in a status (missing or unknown = Pending)."""
        try:
            return cls(str(value))
        except ValueError:
            return cls.PENDING


@dataclass(frozen=True)
class Observation:
    """What the daemon saw in one round."""

    job_exists: bool = False
    """The generator Job exists (created by this or an earlier operator run)."""
    target_ready: bool = False
    """The target URL is resolved (a URL target, or the InferenceService is Ready)."""
    stop_requested: bool = False
    """``spec.stop`` is true."""
    generator_phase: str | None = None
    """The generators' merged phase, if any answered (Pending, Running, Succeeded, Stopped, Failed)."""
    job_finished: str | None = None
    """``Complete`` or ``Failed`` once the Job finished."""
    generators_pending: bool = False
    """No generator pod has started yet (all Pending or not created): stopping loses nothing."""


def next_phase(current: Phase, seen: Observation) -> Phase:
    """The phase after this round."""
    match current:
        case Phase.SUCCEEDED | Phase.FAILED | Phase.STOPPED:
            return current
        case Phase.PENDING | Phase.WAITING_FOR_TARGET:
            if seen.job_exists:
                return Phase.RUNNING  # created before an operator restart: resume watching it
            if seen.stop_requested:
                return Phase.STOPPED
            return Phase.RUNNING if seen.target_ready else Phase.WAITING_FOR_TARGET
        case Phase.RUNNING:
            if seen.stop_requested and seen.generators_pending and seen.generator_phase is None:
                return Phase.STOPPED  # nothing measured yet: end now, the pending pods never start
            match seen.generator_phase:
                case "Succeeded":
                    return Phase.SUCCEEDED
                case "Stopped":
                    return Phase.STOPPED
                case "Failed":
                    return Phase.FAILED
            match seen.job_finished:
                case "Failed":
                    return Phase.FAILED
                case "Complete":
                    return Phase.STOPPED if seen.stop_requested else Phase.SUCCEEDED
            if not seen.job_exists:
                return Phase.FAILED  # the Job was deleted under a running experiment
            return Phase.RUNNING
