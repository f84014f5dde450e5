"""``GET /api/results.zip``: the results directory as written so far, open like every other read."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import aiohttp

from tests.app.loadgen.conftest import StartRun
from tests.app.loadgen.support import TargetServer, eventually

TOKEN = "zip-Token-0123456789abcdef"


async def test_a_running_run_zips_its_records_so_far_and_a_finished_one_its_whole_directory(
    target: TargetServer, start_run: StartRun
) -> None:
    handle = await start_run(target.url(), "--rps", "50", "--duration", "4", "--control-token", TOKEN, "--linger", "60")
    await eventually(lambda: len(handle.run.recorder.records) >= 2, within=15)
    async with aiohttp.ClientSession() as http:
        async with http.get(handle.api("/api/results.zip")) as resp:  # no token: a read
            assert resp.status == 200 and resp.content_type == "application/zip"
            assert resp.headers["Content-Disposition"] == 'attachment; filename="results.zip"'
            running = zipfile.ZipFile(io.BytesIO(await resp.read()))
        rows = list(csv.DictReader(io.StringIO(running.read("results/records.csv").decode())))
        assert len(rows) >= 2 and float(rows[0]["realRPS"]) > 0
        assert not [n for n in running.namelist() if n.endswith(".tmp")]
        run = handle.run
        assert run.config.output is not None
        report = run.config.output / "report.html"
        await eventually(lambda: run.phase.value == "Succeeded" and report.exists(), within=30)
        async with http.get(handle.api("/api/results.zip")) as resp:
            done = zipfile.ZipFile(io.BytesIO(await resp.read()))
    names = set(done.namelist())
    assert {"results/summary.json", "results/records.csv", "results/stages.csv", "results/report.html"} <= names
    assert any(n.endswith(".png") for n in names), names
    summary = json.loads(done.read("results/summary.json"))
    assert summary["sent"] == run.summary()["sent"] > 0
    assert len(done.read("results/records.csv").decode().splitlines()) == summary["records"] + 1


async def test_without_a_results_directory_the_zip_is_a_404_saying_why(
    target: TargetServer, start_run: StartRun
) -> None:
    handle = await start_run(target.url(), "--rps", "10", "--duration", "30", output=False)
    async with aiohttp.ClientSession() as http, http.get(handle.api("/api/results.zip")) as resp:
        assert resp.status == 404
        assert "no results directory" in (await resp.json())["error"]
