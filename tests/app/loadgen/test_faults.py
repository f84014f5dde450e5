"""The generator against a target that answers slowly, resets, closes, or races keep-alive closes.

Every failure is classified and counted per record, the schedule goes on (no send waits for a broken
connection), and a request caught by the keep-alive race is sent once more on a new connection with
its latency still measured from its scheduled time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.app.loadgen.conftest import StartRun
from tests.app.loadgen.faults import FaultyTarget

RPS, DURATION = 50, 2.0


@pytest.fixture
async def faulty() -> AsyncIterator[FaultyTarget]:
    server = FaultyTarget()
    await server.start()
    yield server
    await server.close()


async def _run(start_run: StartRun, url: str, *extra: str) -> dict[str, object]:
    handle = await start_run(url, "--rps", str(RPS), "--duration", str(DURATION), "--arrival", "uniform", *extra)
    run = await handle.finished(within=30)
    summary = run.summary()
    records = [r.to_json() for r in run.recorder.records]
    assert sum(r["errors"] for r in records) == summary["errors"]  # counted per record, none lost
    assert summary["sent"] == pytest.approx(RPS * DURATION, rel=0.1)  # the schedule was kept
    # Never blocking the schedule: the typical send is on time; the tail follows the machine's load
    # (a loaded CI machine stalls the process itself for 100+ ms), so it is bounded loosely.
    assert summary["sendLagMs"]["p50"] < 20 and summary["sendLagMs"]["p99"] < 500
    return summary


@pytest.mark.parametrize(("mode", "error"), [("reset", "reset"), ("close", "closed")])
async def test_resets_and_unanswered_closes_are_classified_counted_and_never_retried_on_fresh_connections(
    faulty: FaultyTarget, start_run: StartRun, mode: str, error: str
) -> None:
    faulty.mode = mode
    summary = await _run(start_run, faulty.url())
    assert summary["errorsByClass"] == {error: summary["sent"]}
    assert summary["completed"] == 0
    assert faulty.requests == summary["sent"]  # a request on a fresh connection is not sent twice


async def test_a_slow_target_times_out_without_holding_up_the_schedule(
    faulty: FaultyTarget, start_run: StartRun
) -> None:
    faulty.delay = 5.0
    summary = await _run(start_run, faulty.url(), "--timeout-ms", "200")
    assert summary["errorsByClass"] == {"timeout": summary["sent"]}


async def test_a_request_written_as_the_server_closes_its_kept_alive_connection_is_retried_once(
    faulty: FaultyTarget, start_run: StartRun
) -> None:
    faulty.mode = "race"
    faulty.delay = 0.03  # every answer takes 30 ms: a retried request's latency includes the retry
    summary = await _run(start_run, faulty.url())
    assert summary["errors"] == 0 and summary["completed"] == summary["sent"]
    # most requests met a closed connection and went out again on a new one
    assert faulty.unanswered >= summary["sent"] // 2
    assert faulty.requests == summary["sent"] + faulty.unanswered
    assert faulty.answered == summary["sent"]
    latency, service = summary["latencyMs"], summary["serviceTimeMs"]
    assert latency["p50"] >= 30 and service["p50"] >= 30
    assert latency["p50"] >= service["p50"]  # from the scheduled time, not the retry's send


async def test_the_keep_alive_race_on_a_retry_is_a_failure_not_a_second_retry(
    faulty: FaultyTarget, start_run: StartRun
) -> None:
    faulty.mode = "race"
    summary = await _run(start_run, faulty.url(), "--max-in-flight", "1")
    assert summary["errors"] == 0
    assert faulty.requests <= 2 * summary["sent"]  # at most one retry each
