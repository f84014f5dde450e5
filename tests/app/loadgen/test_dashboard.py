"""The dashboard in a real (headless Debian) Chromium: it draws the live rates and latencies."""

from __future__ import annotations

import pytest

from tests.app.browser import ARGS, CHROMIUM, needs_chromium
from tests.app.loadgen.conftest import StartRun
from tests.app.loadgen.support import TargetServer, eventually

pytestmark = needs_chromium


async def test_dashboard_draws_live_rates_and_latency(target: TargetServer, start_run: StartRun) -> None:
    from playwright.async_api import async_playwright

    handle = await start_run(target.url(), "--rps", "40", "--duration", "30")
    await eventually(lambda: len(handle.run.recorder.records) >= 2, within=10)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page()
            await page.goto(handle.api("/"))
            # plotly has drawn a line for each series of both charts
            await page.wait_for_function(
                """() => document.querySelectorAll('#rates .scatterlayer .trace path.js-line').length === 3
                   && document.querySelectorAll('#latency .scatterlayer .trace path.js-line').length === 3""",
                timeout=15000,
            )
            points = await page.evaluate("document.getElementById('rates').data[1].y.length")
            assert points >= 2
            await page.wait_for_function(
                "() => parseFloat(document.getElementById('realRPS').textContent) > 0", timeout=15000
            )
            real_rps = float(await page.text_content("#realRPS") or "nan")
            assert real_rps == pytest.approx(40, abs=20)
            assert await page.text_content("#phase") == "Running"
        finally:
            await browser.close()
