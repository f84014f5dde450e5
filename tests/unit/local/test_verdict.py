"""``kinfer run``'s verdict from a generator's summary: failures count against latency, a failed run is never met."""

from __future__ import annotations

import json
from pathlib import Path

from kinfer.local.runner import mark_failed, verdict_of
from tests.unit.local.test_plan import _exp, _plan, _svc

LATENCY = {"p50": 2.0, "p90": 3.0, "p99": 5.0, "p999": 400.0, "max": 900.0}


def _experiment() -> object:
    return _plan([_svc(), _exp(slo={"p99Ms": 100})]).experiments[0]


def test_fast_successes_of_a_mostly_failing_run_do_not_meet_the_p99() -> None:
    verdict = verdict_of(_experiment(), {"sent": 1000, "completed": 10, "dropped": 0, "latencyMs": LATENCY})
    assert verdict is not None and not verdict.met and "success rate 1.00%" in verdict.message


def test_failures_within_one_percent_are_judged_at_the_next_known_percentile_up() -> None:
    # 5 of 1000 failed: the p99 of all requests is the successes' 99.5th, between p99 and p999: p999 decides
    verdict = verdict_of(_experiment(), {"sent": 1000, "completed": 995, "dropped": 0, "latencyMs": LATENCY})
    assert verdict is not None and not verdict.met and "p99 400.0 ms > 100 ms" in verdict.message
    clean = verdict_of(_experiment(), {"sent": 1000, "completed": 1000, "dropped": 0, "latencyMs": LATENCY})
    assert clean is not None and clean.met


def test_a_failed_run_is_never_met_and_says_why(tmp_path: Path) -> None:
    summary = {"phase": "Running", "sent": 100, "completed": 100, "latencyMs": LATENCY,
               "slo": {"p99Ms": 100, "met": True}}  # fmt: skip
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    failed = mark_failed(tmp_path, summary, "the generator was killed by SIGKILL")
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == failed and failed["phase"] == "Failed" and failed["incomplete"] is True
    assert failed["slo"]["met"] is False and failed["sent"] == 100
    verdict = verdict_of(_experiment(), failed)
    assert verdict is not None and not verdict.met and verdict.reason == "RunFailed"
    assert "killed by SIGKILL" in verdict.message and "success rate 100.00%" in verdict.message
