"""`GET /api/status?histograms=1` hands out the latency histograms that the operator merges across pods."""

from __future__ import annotations

import aiohttp

from kinfer import histograms
from tests.app.loadgen.conftest import StartRun
from tests.app.loadgen.support import TargetServer, eventually


async def test_status_histograms_decode_to_the_runs_own_percentiles(target: TargetServer, start_run: StartRun) -> None:
    handle = await start_run(target.url(), "--rps", "80", "--duration", "30")
    await eventually(lambda: len(handle.run.recorder.records) >= 2)
    async with aiohttp.ClientSession() as http:
        async with http.get(handle.api("/api/status")) as resp:
            plain = await resp.json()
        async with http.get(handle.api("/api/status?histograms=1")) as resp:
            status = await resp.json()
    assert "histograms" not in plain
    whole = histograms.decode(status["histograms"]["latency"])
    assert whole.get_total_count() == status["completed"] > 0
    assert histograms.percentiles_ms(whole)["p99"] == status["latencyMs"]["p99"]
    stage0 = histograms.decode(status["histograms"]["stages"]["0"])
    assert stage0.get_total_count() == status["stages"][0]["completed"]
