"""Capacity mode end to end: the real generator against a target that saturates at ~45 requests/s."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kinfer.loadgen.capacity import CapacityRun
from kinfer.loadgen.cli import parse
from kinfer.loadgen.config import build_config
from kinfer.loadgen.runner import Run, serve
from tests.app.loadgen.support import TargetServer, eventually

KINFER = str(Path(sys.executable).parent / "kinfer")


class SingleServer(TargetServer):
    """One request at a time, 20 ms each: beyond ~45 rps the queue (and p99) grows without bound."""

    def __init__(self) -> None:
        super().__init__()
        self.one_at_a_time = asyncio.Semaphore(1)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        async with self.one_at_a_time:
            await asyncio.sleep(0.02)
        return await super().handle(request)


@pytest.fixture
async def single() -> AsyncIterator[SingleServer]:
    server = SingleServer()
    await server.start()
    yield server
    await server.close()


async def _get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        return await resp.json()


async def test_the_search_finds_a_capacity_and_writes_one_stage_per_probe(single: SingleServer, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        KINFER, "loadgen", single.url(), "--mode", "capacity", "--slo-p99-ms", "100", "--min-rps", "10",
        "--max-rps", "160", "--probe-duration", "1", "--precision", "0.5", "--arrival", "uniform",
        "--interval", "0.5", "--max-windows", "3",
        "--output", str(tmp_path), "--control-port", "0", "--control-host", "127.0.0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
    api = line.split(" on ")[-1].strip().rstrip("/")
    seen: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:
        while proc.returncode is None and len(seen) < 200:
            try:
                status = await _get(session, api + "/api/status")
            except aiohttp.ClientError:
                break  # the search is over and the control API closed
            if status["phase"] == "Running" and status["stage"] is not None:
                seen.append(status)
            await asyncio.sleep(0.1)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert "done: Succeeded capacity" in out.decode().splitlines()[-1]

    # live: the probe under way as the stage, its rate as the target, the capacity so far
    assert seen and all(s["mode"] == "capacity" and "probes" in s["capacity"] for s in seen)
    assert {s["stage"]["rps"] for s in seen} >= {10.0, 20.0}
    assert any(s["targetRPS"] == s["stage"]["rps"] for s in seen)

    summary = json.loads((tmp_path / "summary.json").read_text())
    cap = summary["capacity"]
    probes = cap["probes"]
    assert [p["rps"] for p in probes[:4]] == [10.0, 20.0, 40.0, 80.0]
    assert probes[0]["met"] and not probes[3]["met"] and probes[3]["p99Ms"] > 100
    assert 10 <= cap["rps"] < 80 and cap["p99Ms"] <= 100
    assert all(set(p) >= {"rps", "p99Ms", "serviceRate", "samples", "stable", "windows"} for p in probes)
    assert all(p["samples"] > 0 and 1 <= len(p["windows"]) <= 3 for p in probes)
    assert summary["slo"] == {"p99Ms": 100.0, "minSuccessRate": None, "met": True,
                              "successRate": summary["successRate"],
                              "message": f"capacity {cap['rps']:g} rps at p99 {cap['p99Ms']} ms"}  # fmt: skip
    assert summary["phase"] == "Succeeded" and summary["sent"] == single.received
    assert [s["rps"] for s in summary["stages"]] == [p["rps"] for p in probes]
    assert sum(s["sent"] for s in summary["stages"]) == summary["sent"]
    rows = list(csv.DictReader((tmp_path / "records.csv").read_text().splitlines()))
    t = [float(r["t"]) for r in rows]
    assert t == sorted(t) and t[-1] > probes[-1]["startS"] >= probes[0]["endS"]
    stage_rows = list(csv.DictReader((tmp_path / "stages.csv").read_text().splitlines()))
    assert len(stage_rows) == len(probes)
    report = (tmp_path / "report.html").read_text()
    assert "Capacity" in report and 'src="capacity.png"' in report


async def test_stop_ends_the_search_keeping_the_probes_done(single: SingleServer, tmp_path: Path) -> None:
    args = [single.url(), "--mode", "capacity", "--slo-p99-ms", "100", "--min-rps", "5", "--max-rps", "40",
            "--probe-duration", "1", "--max-windows", "3", "--control-port", "0", "--control-host", "127.0.0.1",
            "--quiet", "--output", str(tmp_path)]  # fmt: skip
    run = CapacityRun(build_config(parse(args)), in_process=True)
    task: asyncio.Task[Run] = asyncio.create_task(serve(run))
    await eventually(lambda: len(run.search.probes) == 1, within=20)
    async with aiohttp.ClientSession() as session:
        assert run.control_url is not None
        async with session.post(run.control_url + "api/intensity", json={"rps": 3}) as resp:
            assert resp.status == 400  # the search sets the rate
        async with session.post(run.control_url + "api/stop", json={}) as resp:
            assert resp.status == 200
    await asyncio.wait_for(task, 20)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["phase"] == "Stopped"
    assert summary["capacity"]["rps"] == 5.0 and len(summary["capacity"]["probes"]) == 1
