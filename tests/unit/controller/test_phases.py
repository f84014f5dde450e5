"""The LoadExperiment phase machine, transition by transition."""

from __future__ import annotations

import pytest

from kinfer.controller.phases import Observation, Phase, next_phase

P, W, R, S, F, X = (Phase.PENDING, Phase.WAITING_FOR_TARGET, Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED,
                    Phase.STOPPED)


@pytest.mark.parametrize(
    ("current", "seen", "expected"),
    [
        (P, Observation(), W),
        (P, Observation(target_ready=True), R),
        (W, Observation(), W),
        (W, Observation(target_ready=True), R),
        (W, Observation(stop_requested=True), X),
        (P, Observation(job_exists=True), R),  # restarted operator: the Job is already there
        (W, Observation(job_exists=True, stop_requested=True), R),  # running generator: stop it gracefully
        (R, Observation(job_exists=True), R),
        (R, Observation(job_exists=True, generator_phase="Running"), R),
        (R, Observation(job_exists=True, generator_phase="Succeeded"), S),
        (R, Observation(job_exists=True, generator_phase="Stopped"), X),
        (R, Observation(job_exists=True, generator_phase="Failed"), F),
        (R, Observation(job_exists=True, job_finished="Failed"), F),
        (R, Observation(job_exists=True, job_finished="Complete"), S),
        (R, Observation(job_exists=True, job_finished="Complete", stop_requested=True), X),
        (R, Observation(job_exists=False), F),
        (S, Observation(job_exists=True, generator_phase="Running"), S),
        (F, Observation(target_ready=True), F),
        (X, Observation(), X),
    ],
)
def test_transitions(current: Phase, seen: Observation, expected: Phase) -> None:
    assert next_phase(current, seen) is expected


def test_phase_of_status_values() -> None:
    assert Phase.of(None) is Phase.PENDING
    assert Phase.of("Running") is Phase.RUNNING
    assert Phase.of("Bogus") is Phase.PENDING
    assert [p for p in Phase if p.terminal] == [S, F, X]
