"""Every verdict the generator gives counts failures against the SLO: a schedule run and a capacity probe
whose successes are fast but half of whose requests fail do not meet a p99 objective."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.app.loadgen.conftest import StartRun
from tests.app.loadgen.faults import FaultyTarget


@pytest.fixture
async def flaky() -> AsyncIterator[FaultyTarget]:
    server = FaultyTarget("flaky")
    await server.start()
    yield server
    await server.close()


async def test_a_run_whose_successes_are_fast_but_half_failed_does_not_meet_its_p99(
    flaky: FaultyTarget, start_run: StartRun, tmp_path: Path
) -> None:
    handle = await start_run(flaky.url(), "--rps", "50", "--duration", "2", "--slo-p99-ms", "1000")
    run = await handle.finished()
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert summary["latencyMs"]["p99"] < 1000  # the successes alone would pass
    slo = summary["slo"]
    assert slo["met"] is False
    assert slo["successRate"] == pytest.approx(0.5, abs=0.05) == summary["successRate"]
    assert "requests failed or were dropped" in slo["message"] and "success rate" in slo["message"]
    assert run.summary()["errorsByClass"] == {"http_503": summary["errors"]}


async def test_a_capacity_probe_counts_failures_so_a_failing_service_has_no_capacity(
    flaky: FaultyTarget, tmp_path: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kinfer.cli", "loadgen", flaky.url(), "--mode", "capacity", "--slo-p99-ms", "1000",
        "--min-rps", "10", "--max-rps", "40", "--probe-duration", "1", "--arrival", "uniform",
        "--output", str(tmp_path), "--control-port", "-1", "--quiet",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 1, (out + err).decode()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["capacity"]["rps"] is None
    first = summary["capacity"]["probes"][0]
    assert first["rps"] == 10 and not first["met"] and "failed or were dropped" in first["message"]
    assert summary["slo"]["met"] is False and "no capacity" in summary["slo"]["message"]
