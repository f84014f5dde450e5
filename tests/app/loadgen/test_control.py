"""The control API: status snapshot, records, live intensity, stop, the seed's URLs, metrics, dashboard."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kinfer.loadgen.recorder import RECORD_COLUMNS
from tests.app.loadgen.conftest import StartRun
from tests.app.loadgen.support import TargetServer, eventually

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_status_carries_phase_stage_target_window_totals_and_stages(
    target: TargetServer, start_run: StartRun, http: aiohttp.ClientSession
) -> None:
    handle = await start_run(target.url(), "--rps", "50", "--duration", "30")
    await eventually(lambda: len(handle.run.recorder.records) >= 1)
    status = await get_json(http, handle.api("/api/status"))
    assert status["phase"] == "Running"
    assert status["stage"]["index"] == 0
    assert status["stage"]["rps"] == 50
    assert status["stage"]["endsAt"].endswith("Z")
    assert status["targetRPS"] == 50
    for key in ("realRPS", "realQPS", "p50Ms", "p99Ms", "maxMs", "avgRPS", "avgQPS", "serviceRate", "avg99thMs"):
        assert key in status, key
    assert status["live"]["t"] == pytest.approx(1.0, abs=0.05)
    assert status["sent"] >= status["completed"] > 0
    assert status["totals"]["sent"] == status["sent"]
    assert status["stages"][0]["sent"] > 0
    records = await get_json(http, handle.api("/api/records?since=0"))
    assert records["records"][0]["index"] == 0
    later = await get_json(http, handle.api(f"/api/records?since={records['next']}"))
    assert all(r["index"] >= records["next"] for r in later["records"])


async def test_posting_intensity_changes_the_sending_rate_within_a_second(
    target: TargetServer, start_run: StartRun, http: aiohttp.ClientSession
) -> None:
    handle = await start_run(target.url(), "--rps", "10", "--duration", "30", "--arrival", "uniform")
    await eventually(lambda: target.received >= 2)
    async with http.post(handle.api("/api/intensity"), json={"rps": 200}) as resp:
        assert resp.status == 200
        assert (await resp.json())["targetRPS"] == 200
    changed_at = time.monotonic()
    before = target.received
    # at 10 rps, 40 more requests would take 4 s; at 200 rps they take 0.2 s after the change
    await eventually(lambda: target.received - before >= 40, within=5)
    assert time.monotonic() - changed_at < 1.0
    async with http.post(handle.api("/api/intensity"), json={"rps": None}) as resp:
        assert (await resp.json())["targetRPS"] == 10
    status = await get_json(http, handle.api("/api/status"))
    assert status["intensity"] is None


@pytest.mark.parametrize(
    "body", ["not json", '{"rps": -1}', '{"rps": "fast"}', '{"rps": true}', '{"speed": 3}', "[1]", '{"rps": 1e9}']
)
async def test_bad_intensity_requests_get_400_with_an_error(
    target: TargetServer, start_run: StartRun, http: aiohttp.ClientSession, body: str
) -> None:
    handle = await start_run(target.url(), "--rps", "5", "--duration", "30")
    async with http.post(handle.api("/api/intensity"), data=body, headers=JSON) as resp:
        assert resp.status == 400
        assert "error" in await resp.json()
    assert handle.run.plan.override is None


async def test_stop_ends_the_run_gracefully_and_keeps_results(
    target: TargetServer, start_run: StartRun, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    handle = await start_run(target.url(), "--rps", "50", "--duration", "60")
    await eventually(lambda: len(handle.run.recorder.records) >= 1)
    async with http.post(handle.api("/api/stop"), json={}) as resp:
        assert resp.status == 200
    run = await handle.finished(within=10)
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert summary["phase"] == run.phase == "Stopped"
    assert summary["sent"] == target.received
    assert summary["durationS"] < 10
    rows = list(csv.DictReader((tmp_path / "results" / "records.csv").read_text().splitlines()))
    assert tuple(rows[0]) == RECORD_COLUMNS
    assert len(rows) == len(run.recorder.records) >= 1
    assert (tmp_path / "results" / "stages.csv").exists()
    for key in ("sent", "completed", "errors", "dropped", "durationS", "achievedRPS", "latencyMs",
                "serviceTimeMs", "sendLagMs", "stages", "slo", "serverTimingMs"):  # fmt: skip
        assert key in summary, key
    assert set(summary["latencyMs"]) == {"p50", "p90", "p99", "p999", "max", "mean"}
    assert set(summary["sendLagMs"]) == {"p50", "p99", "max"}


async def test_the_seeds_urls_still_work(
    target: TargetServer, start_run: StartRun, http: aiohttp.ClientSession
) -> None:
    handle = await start_run(target.url(), "--rps", "20", "--duration", "60")
    await eventually(lambda: len(handle.run.recorder.records) >= 1)
    async with http.get(handle.api("/setIntensity.do?intensity=30&serviceId=0")) as resp:
        assert resp.status == 200
    assert handle.run.plan.override == 30
    async with http.get(handle.api("/startOnlineQuery.do?intensity=40")) as resp:
        assert resp.status == 200
    assert handle.run.plan.override == 40
    async with http.get(handle.api("/setIntensity.do?intensity=lots")) as resp:
        assert resp.status == 400
    seed = await get_json(http, handle.api("/getOnlineQueryTime.do?serviceId=0"))
    assert set(seed) == {"realRPS", "realQPS", "avgRPS", "avgQPS", "SR", "queryTime", "avg99th"}
    assert seed["SR"] == pytest.approx(100, abs=10)
    async with http.get(handle.api("/goOnlineQuery.do"), allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "/"
    async with http.get(handle.api("/stopOnlineQuery.do")) as resp:
        assert resp.status == 200
    assert (await handle.finished(within=10)).phase == "Stopped"


async def test_metrics_expose_counters_histogram_and_target(
    target: TargetServer, start_run: StartRun, http: aiohttp.ClientSession
) -> None:
    target.status = 500
    handle = await start_run(target.url(), "--rps", "40", "--duration", "30")
    await eventually(lambda: len(handle.run.recorder.records) >= 1)
    async with http.get(handle.api("/metrics")) as resp:
        text = await resp.text()
    assert "kinfer_loadgen_requests_sent_total" in text
    assert 'kinfer_loadgen_errors_total{class="http_500"}' in text
    assert "kinfer_loadgen_dropped_total 0.0" in text
    assert "kinfer_loadgen_target_rps 40.0" in text
    assert 'kinfer_loadgen_latency_seconds_bucket{le="+Inf"}' in text


async def test_dashboard_page_and_its_charting_library_are_served(
    target: TargetServer, start_run: StartRun, http: aiohttp.ClientSession
) -> None:
    handle = await start_run(target.url(), "--rps", "5", "--duration", "30")
    async with http.get(handle.api("/")) as resp:
        page = await resp.text()
    assert "/static/plotly.min.js" in page
    assert "/api/records?since=" in page
    async with http.get(handle.api("/static/plotly.min.js")) as resp:
        assert resp.content_type == "application/javascript"
        js = await resp.text()
    assert "plotly" in js[:2000].lower()
    assert len(js) > 1_000_000
