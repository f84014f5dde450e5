"""The SLO verdict counts failures and drops against latency, and always says the success rate."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kinfer.api.loadexperiment import SLO
from kinfer.api.slo import evaluate, failure_adjusted_percentile, latency_from_summary


def test_a_p99_of_the_few_successes_does_not_meet_the_slo_when_most_requests_failed() -> None:
    verdict = evaluate(SLO(p99Ms=100), p99_ms=5, sent=1000, completed=10)
    assert not verdict.met
    assert verdict.reason == "SLOViolated"
    assert "990 of 1000 requests failed or were dropped" in verdict.message
    assert verdict.message.endswith("success rate 1.00% (10 of 1000 offered)")
    assert verdict.success_rate == pytest.approx(0.01)


def test_drops_count_against_the_latency_objective_like_failures() -> None:
    verdict = evaluate(SLO(p99Ms=100), p99_ms=5, sent=980, completed=980, dropped=20)
    assert not verdict.met and "20 of 1000" in verdict.message


def test_failures_within_the_one_percent_push_the_judged_percentile_up() -> None:
    asked: list[float] = []

    def at(q: float) -> float:
        asked.append(q)
        return 50.0 if q <= 99.0 else 150.0  # the successes' tail beyond their own p99

    verdict = evaluate(SLO(p99Ms=100), p99_ms=50, sent=1000, completed=995, latency_at=at)
    assert asked == [pytest.approx(99.0 * 1000 / 995)]
    assert not verdict.met
    assert "p99 150.0 ms > 100 ms (5 failed or dropped counted above it)" in verdict.message
    assert failure_adjusted_percentile(99.0, 1000, 990) == pytest.approx(100.0)
    assert failure_adjusted_percentile(99.0, 1000, 989) is None


def test_a_clean_run_reports_its_success_rate_beside_the_met_latency() -> None:
    verdict = evaluate(SLO(p99Ms=100), p99_ms=80, sent=1000, completed=1000, latency_at=lambda q: 80.0)
    assert verdict.met
    assert verdict.message == "p99 80.0 ms <= 100 ms; success rate 100.00% (1000 of 1000 offered)"


def test_no_slo_is_met_and_still_says_the_success_rate() -> None:
    verdict = evaluate(None, 5, 1000, 10)
    assert verdict.met and verdict.reason == "NoSLO" and "success rate 1.00%" in verdict.message


def test_latency_from_a_summary_rounds_percentiles_up_to_the_next_known_one() -> None:
    at = latency_from_summary({"p50": 1, "p90": 2, "p99": 3, "p999": 4, "max": 5})
    assert [at(q) for q in (50, 60, 99, 99.2, 99.9, 99.95, 100)] == [1, 2, 3, 4, 4, 5, 5]
    assert latency_from_summary(None)(99) is None
    assert latency_from_summary({"p99": 3, "max": None})(99.5) is None


counts = st.integers(min_value=0, max_value=100_000)


@settings(max_examples=400, deadline=None)
@given(
    sent=counts,
    dropped=counts,
    data=st.data(),
    bound=st.floats(min_value=1, max_value=1000),
    p99=st.floats(min_value=0, max_value=2000),
    rate=st.none() | st.floats(min_value=0, max_value=1),
)
def test_no_verdict_is_met_when_more_than_one_percent_failed_or_what_it_says_is_false(
    sent: int, dropped: int, data: st.DataObject, bound: float, p99: float, rate: float | None
) -> None:
    completed = data.draw(st.integers(min_value=0, max_value=sent))
    offered = sent + dropped
    verdict = evaluate(SLO(p99Ms=bound, minSuccessRate=rate), p99, sent, completed, dropped, latency_at=lambda q: p99)
    assert "success rate" in verdict.message
    if verdict.met:
        assert offered > 0 and completed >= 0.99 * offered - 1e-6
        assert p99 <= bound
        assert rate is None or completed / offered >= rate
    # more failures never turn a violated SLO into a met one
    if completed > 0 and not verdict.met:
        worse = evaluate(
            SLO(p99Ms=bound, minSuccessRate=rate), p99, sent, completed - 1, dropped, latency_at=lambda q: p99
        )
        assert not worse.met
