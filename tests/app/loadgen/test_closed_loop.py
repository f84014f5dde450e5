"""Closed loop, request budgets and client batches: the real generator against a real local server."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.app.loadgen.conftest import StartRun
from tests.app.loadgen.support import TargetServer, eventually


class CountingServer(TargetServer):
    """Also knows how many requests it holds right now, and the most it ever held."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.max_in_flight = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await super().handle(request)
        finally:
            self.in_flight -= 1


@pytest.fixture
async def counting() -> AsyncIterator[CountingServer]:
    server = CountingServer()
    await server.start()
    yield server
    await server.close()


async def test_a_closed_loop_keeps_n_requests_outstanding_and_measures_from_the_send(
    counting: CountingServer, start_run: StartRun, tmp_path: Path
) -> None:
    counting.delay = 0.02
    run = await (await start_run(counting.url(), "--concurrency", "4", "--duration", "1.5")).finished()
    summary = run.summary()
    assert summary["phase"] == "Succeeded" and summary["mode"] == "closed"
    assert counting.max_in_flight == 4
    assert summary["sent"] == counting.received == summary["completed"] + summary["errors"]
    # 4 clients, 20 ms each: at most 300 in 1.5 s (fewer on a loaded machine, never more)
    assert 100 <= summary["completed"] <= 305
    assert summary["latencyFrom"] == "send" and "coordinated omission" in summary["note"]
    assert 20 <= summary["latencyMs"]["p50"] < 200
    assert summary["sendLagMs"] == {"p50": None, "p99": None, "max": None}
    stage = summary["stages"][0]
    assert stage["concurrency"] == 4 and stage["rps"] is None
    assert stage["requestsPerS"] == pytest.approx(summary["completed"] / stage["durationS"], rel=0.01)
    assert summary["throughput"]["requestsPerS"] == summary["throughput"]["imagesPerS"] > 0
    assert all(r.concurrency == 4 for r in run.recorder.records[:-1])
    written = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert written["mode"] == "closed"
    report = (tmp_path / "results" / "report.html").read_text()
    assert "Closed-loop results" in report and 'src="throughput_vs_concurrency.png"' in report


async def test_requests_stops_a_closed_and_an_open_loop_after_that_many(
    target: TargetServer, start_run: StartRun
) -> None:
    closed = (await (await start_run(target.url(), "--concurrency", "3", "--requests", "50", output=False))
              .finished()).summary()  # fmt: skip
    assert closed["phase"] == "Succeeded"
    assert closed["sent"] == closed["completed"] == 50 == target.received
    assert closed["requestsLimit"] == 50
    opened = (await (await start_run(target.url(), "--rps", "200", "--requests", "30", output=False))
              .finished()).summary()  # fmt: skip
    assert opened["phase"] == "Succeeded" and opened["mode"] == "open"
    assert opened["sent"] == 30 and target.received == 80
    assert opened["durationS"] < 5  # it ended at the 30th request, not after a default duration


async def test_stages_and_intensity_change_the_number_of_clients(
    counting: CountingServer, start_run: StartRun, tmp_path: Path
) -> None:
    counting.delay = 0.05
    schedule = tmp_path / "closed.yaml"
    schedule.write_text("- {concurrency: 1, duration: 0.5s}\n- {concurrency: 5, duration: 30s}\n")
    handle = await start_run(counting.url(), "--schedule", str(schedule))
    await eventually(lambda: counting.in_flight == 5, within=10)
    async with aiohttp.ClientSession() as http:
        async with http.get(handle.api("/api/status")) as resp:
            status = await resp.json()
        assert status["mode"] == "closed" and status["concurrency"] == 5
        assert status["stage"]["index"] == 1 and status["stage"]["concurrency"] == 5
        # what `kubectl patch ... intensity` reaches: in a closed loop the value is a number of clients
        async with http.post(handle.api("/api/intensity"), json={"rps": 2}) as resp:
            assert resp.status == 200
        counting.max_in_flight = 0
        await eventually(lambda: counting.in_flight <= 2, within=5)
        counting.max_in_flight = counting.in_flight
        async with http.get(handle.api("/api/status")) as resp:
            assert (await resp.json())["concurrency"] == 2
        async with http.post(handle.api("/api/intensity"), json={"rps": 2.5}) as resp:
            assert resp.status == 400
            assert "number of clients" in (await resp.json())["error"]
        await eventually(lambda: counting.received >= 40)
        assert counting.max_in_flight <= 2
        async with http.post(handle.api("/api/intensity"), json={"rps": 7}) as resp:
            assert resp.status == 200
        await eventually(lambda: counting.in_flight == 7, within=5)
    handle.run.stop()
    summary = (await handle.finished()).summary()
    assert summary["phase"] == "Stopped"
    assert [s["concurrency"] for s in summary["stages"]] == [1, 5]


async def test_think_time_spaces_each_clients_requests(target: TargetServer, start_run: StartRun) -> None:
    run = await (
        await start_run(target.url(), "--concurrency", "2", "--think-time", "0.1", "--duration", "1", output=False)
    ).finished()
    summary = run.summary()
    # each client: one request per ~100 ms (plus the request itself): at most 2 x 10 + 2 in a second
    assert 6 <= summary["sent"] <= 22
    assert summary["thinkTimeS"] == 0.1


async def test_batch_size_sends_n_images_in_one_v2_tensor_and_reports_images_per_second(
    target: TargetServer, start_run: StartRun, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    contents = [bytes([i]) * (50 + i) for i in range(3)]
    for i, data in enumerate(contents):
        (images / f"img{i}.jpg").write_bytes(data)
    run = await (
        await start_run(
            target.url("/v2/models/m/infer"), "--concurrency", "2", "--duration", "1", "--protocol", "v2",
            "--payload", f"dataset:{images}", "--batch-size", "4",
        )
    ).finished()  # fmt: skip
    bodies = [json.loads(b) for b in target.bodies]
    tensors = [b["inputs"][0] for b in bodies]
    assert all(t["shape"] == [4] and t["datatype"] == "BYTES" and len(t["data"]) == 4 for t in tensors)
    assert {base64.b64decode(x) for t in tensors for x in t["data"]} == set(contents)
    summary = run.summary()
    assert summary["batchSize"] == 4
    assert summary["throughput"]["imagesPerS"] == pytest.approx(4 * summary["throughput"]["requestsPerS"], rel=1e-3)
    assert summary["stages"][0]["imagesPerS"] == pytest.approx(4 * summary["stages"][0]["requestsPerS"], rel=1e-3)
    first = run.recorder.records[0]
    assert first.images_per_s == 4 * first.real_qps > 0
    assert "images/s" in (tmp_path / "results" / "report.html").read_text()
