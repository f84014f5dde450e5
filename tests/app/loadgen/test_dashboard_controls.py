"""The live dashboard in a real (headless Debian) Chromium, driving a real ``kinfer loadgen`` process
against a real ``kinfer serve --format null`` (gunicorn): its controls change the measured rate, each
control says what happened, stages are marked and tabled, the results download as a zip, and the page
logs no console error. A screenshot is kept as a test artifact (``results/test-artifacts/``)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.app.browser import ARGS, CHROMIUM, needs_chromium, record_problems
from tests.app.server.conftest import ServerFactory, serve  # noqa: F401  (the fixture)

KINFER = str(Path(sys.executable).parent / "kinfer")
TOKEN = "dashboard-Token-0123456789abcdef"
ARTIFACTS = Path(__file__).resolve().parents[3] / "results" / "test-artifacts"

pytestmark = needs_chromium


@pytest.fixture
async def generator(serve: ServerFactory, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:  # noqa: F811
    """``kinfer loadgen`` (a subprocess, a control token) against ``kinfer serve --format null``: two
    stages of 20 rps, then 30 rps for long enough to be controlled; yields its control URL and results."""
    server = serve("--format", "null", "--workers", "1", "--threads", "4")
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text("- {rps: 20, duration: 3s}\n- {rps: 30, duration: 120s}\n")
    results = tmp_path / "results"
    proc = await asyncio.create_subprocess_exec(
        KINFER, "loadgen", server.url + "/gpu", "--schedule", str(schedule), "--arrival", "uniform",
        "--control-port", "0", "--control-token", TOKEN, "--output", str(results), "--quiet",
        "--server-metrics", server.url + "/metrics",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
    match = re.search(r"(http://\S+?)/?$", line.strip())
    assert match, line
    try:
        yield match.group(1), results
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


async def _records(http: aiohttp.ClientSession, url: str, since: int) -> list[dict[str, Any]]:
    async with http.get(f"{url}/api/records?since={since}") as resp:
        records: list[dict[str, Any]] = (await resp.json())["records"]
        return records


async def test_dashboard_controls_change_the_measured_rate_and_say_so(
    generator: tuple[str, Path], tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    url, _ = generator
    async with aiohttp.ClientSession() as http, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1300}, accept_downloads=True)
            problems = record_problems(page)
            # the token travels in the fragment (never sent to the server, never in a Referer)
            await page.goto(f"{url}/#token={TOKEN}")

            # the second stage starts at t=3 s: its boundary is marked, both stages are tabled
            await page.wait_for_function(
                "() => document.querySelectorAll('#stages tbody tr').length >= 2", timeout=20000
            )
            await page.wait_for_function(
                "() => document.getElementById('rates').layout.shapes.length >= 1", timeout=10000
            )
            shapes = await page.evaluate("document.getElementById('rates').layout.shapes.map(s => s.x0)")
            assert shapes == [pytest.approx(3.0, abs=0.01)]
            labels = await page.evaluate("document.getElementById('latency').layout.annotations.map(a => a.text)")
            assert labels == ["stage 0 · 20 rps", "stage 1 · 30 rps"]
            first_row = await page.eval_on_selector_all(
                "#stages tbody tr:first-child td", "tds => tds.map(td => td.textContent)"
            )
            assert first_row[0] == "0" and first_row[1] == "20.0" and int(first_row[3]) > 0
            # the running stage's row fills in live: its sent count grows while the page is open
            sent_now = await page.text_content("#stages tbody tr.current td:nth-child(4)")
            await page.wait_for_function(
                "(before) => parseInt(document.querySelector('#stages tbody tr.current td:nth-child(4)')"
                ".textContent) > before",
                arg=int(sent_now or "0"),
                timeout=10000,
            )

            # set the rate: the page confirms the generator's answer, and the measured rate moves there
            await page.fill("#rps", "80")
            await page.click("#set")
            await page.wait_for_function(
                "() => document.getElementById('feedback').textContent.includes('80')", timeout=10000
            )
            assert await page.text_content("#feedback") == "intensity set to 80 RPS (target now 80)"
            assert await page.get_attribute("#feedback", "class") == "ok"
            async with http.get(f"{url}/api/status") as resp:
                since = (await resp.json())["records"]
            seen: list[float] = []
            deadline = asyncio.get_running_loop().time() + 30
            while asyncio.get_running_loop().time() < deadline:
                # skip the record that straddles the change; then realRPS is measured at the new rate
                seen = [r["realRPS"] for r in await _records(http, url, since + 1)]
                if len(seen) >= 3:
                    break
                await asyncio.sleep(0.5)
            print(f"realRPS after setting 80 from the dashboard: {seen}")
            assert len(seen) >= 3 and all(rps == pytest.approx(80, rel=0.2) for rps in seen[:3])
            await page.wait_for_function(
                "() => parseFloat(document.getElementById('targetRPS').textContent) === 80", timeout=10000
            )

            # a bad value: the generator's 400 message is shown, and nothing changes
            await page.fill("#rps", "-5")
            await page.click("#set")
            await page.wait_for_function(
                "() => document.getElementById('feedback').className === 'error'", timeout=10000
            )
            bad = await page.text_content("#feedback") or ""
            assert bad.startswith("refused (400): ") and "between 0 and" in bad, bad
            async with http.get(f"{url}/api/status") as resp:
                assert (await resp.json())["intensity"] == 80

            # the results directory so far, as a zip through the page's link
            async with page.expect_download() as info:
                await page.click("#zip")
            download = await info.value
            saved = tmp_path / "dashboard-results.zip"
            await download.save_as(saved)
            with zipfile.ZipFile(saved) as archive:
                names = archive.namelist()
                assert "results/records.csv" in names and "results/summary.json" in names, names
                rows = archive.read("results/records.csv").decode().splitlines()
                assert rows[0].startswith("t,targetRPS,realRPS") and len(rows) >= 5
                assert json.loads(archive.read("results/summary.json"))["sent"] > 0

            # the charts hold the new series: errors/dropped/SR and the server's resources have traces
            traces = await page.evaluate(
                "['rates', 'quality', 'latency', 'server'].map(id => document.getElementById(id).data.length)"
            )
            assert traces == [3, 3, 3, 2]
            # the server's CPU (scraped from kinfer serve's /metrics) is charted; no GPU: empty, not zero
            cpu, gpu = await page.evaluate("document.getElementById('server').data.map(t => t.y)")
            assert any(v is not None and v > 0 for v in cpu), cpu
            assert all(v is None for v in gpu), gpu
            assert float(await page.text_content("#serverCPU") or "nan") >= 0
            assert await page.text_content("#serverGPUUtil") == "-"
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "dashboard.png"
            await page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:4] == b"\x89PNG"
            print(f"dashboard screenshot: {shot}")

            # stop: confirmed, the run ends
            await page.click("#stop")
            await page.wait_for_function(
                "() => document.getElementById('feedback').textContent.startsWith('stopping')", timeout=10000
            )
        finally:
            await browser.close()
    # Chromium logs every 4xx answer to a fetch as a console error: the one 400 the bad value was meant
    # to get is the only one allowed; any other console message or page error fails the test.
    refused = (
        "console: Failed to load resource: the server responded with a status of 400 (Bad Request) "
        f"at {url}/api/intensity"
    )
    assert problems == [refused], problems


async def test_a_control_without_the_token_shows_the_refusal(generator: tuple[str, Path]) -> None:
    from playwright.async_api import async_playwright

    url, _ = generator
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page()
            await page.goto(f"{url}/")
            await page.fill("#rps", "50")
            await page.click("#set")
            await page.wait_for_function(
                "() => document.getElementById('feedback').className === 'error'", timeout=10000
            )
            text = await page.text_content("#feedback") or ""
            assert text.startswith("refused (401): missing control token"), text
            await page.fill("#rps", "")
            await page.click("#set")
            await page.wait_for_function(
                "() => document.getElementById('feedback').textContent.startsWith('enter a number')", timeout=5000
            )
        finally:
            await browser.close()

