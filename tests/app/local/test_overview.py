"""``kinfer run`` with several experiments serves one page listing them all, in a real (headless Debian)
Chromium: a row per experiment with its live numbers, a link to its dashboard that keeps the token, and
that dashboard's controls work when reached through the link."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import yaml

from tests.app.browser import ARGS, CHROMIUM, needs_chromium, record_problems

KINFER = [sys.executable, "-m", "kinfer.cli"]

pytestmark = needs_chromium


def _manifest(tmp_path: Path) -> Path:
    svc = {"apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "svc"},
           "spec": {"model": {"name": "m", "format": "null", "delayMs": 1}, "workers": 1, "threads": 4}}
    experiments = [
        {"apiVersion": "kinfer.dev/v1alpha1", "kind": "LoadExperiment", "metadata": {"name": name},
         "spec": {"target": {"service": "svc", "path": "/gpu"}, "arrival": "uniform",
                  "schedule": [{"rps": rps, "duration": "90s"}]}}
        for name, rps in (("exp-a", 20), ("exp-b", 30))
    ]  # fmt: skip
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump_all([svc, *experiments]))
    return path


async def _wait_for_lines(proc: asyncio.subprocess.Process, count: int, pattern: str) -> list[str]:
    assert proc.stdout is not None
    found: list[str] = []
    seen: list[str] = []
    while len(found) < count:
        line = (await asyncio.wait_for(proc.stdout.readline(), 90)).decode()
        assert line, "".join(seen)
        seen.append(line)
        if re.search(pattern, line):
            found.append(line.strip())
    return found


async def test_several_experiments_are_listed_on_one_page_with_links_to_their_dashboards(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    proc = await asyncio.create_subprocess_exec(
        *KINFER, "run", str(_manifest(tmp_path)), "--results", str(tmp_path / "results"), "--no-dashboard",
        "--plain", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path)  # fmt: skip
    try:
        lines = await _wait_for_lines(proc, 3, r"-> dashboard http://")
        dashboards = {m.group(1): m.group(2) for line in lines
                      if (m := re.match(r"LoadExperiment (\S+): \S+ -> dashboard (\S+)$", line))}  # fmt: skip
        [overview] = [line.split("-> dashboard ")[1] for line in lines if line.startswith("all 2 experiments")]
        token = overview.split("#token=")[1]
        assert set(dashboards) == {"exp-a", "exp-b"}
        assert all(url.endswith(f"/#token={token}") for url in dashboards.values())
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = await browser.new_page()
                problems = record_problems(page)
                await page.goto(overview)
                # both experiments, running, with live rates near their schedules'
                await page.wait_for_function(
                    """() => [...document.querySelectorAll('#experiments tbody tr')].filter(
                         tr => tr.cells[1].textContent === 'Running' && parseFloat(tr.cells[4].textContent) > 0
                       ).length === 2""",
                    timeout=60000,
                )
                cells = await page.eval_on_selector_all(
                    "#experiments tbody tr", "trs => trs.map(tr => [...tr.cells].map(td => td.textContent))"
                )
                print(f"overview rows: {cells}")
                assert [c[0] for c in cells] == ["exp-a", "exp-b"]
                assert [float(c[3]) for c in cells] == [20.0, 30.0]  # target RPS
                links = await page.eval_on_selector_all("#experiments a", "as => as.map(a => a.href)")
                assert links == [dashboards["exp-a"], dashboards["exp-b"]]

                # through the link: exp-b's dashboard, whose controls carry the token
                await page.click("text=exp-b")
                await page.wait_for_url(dashboards["exp-b"])
                await page.wait_for_function("() => document.getElementById('phase').textContent === 'Running'")
                await page.fill("#rps", "15")
                await page.click("#set")
                await page.wait_for_function(
                    "() => document.getElementById('feedback').className === 'ok'", timeout=10000
                )
                assert await page.text_content("#feedback") == "intensity set to 15 RPS (target now 15)"
            finally:
                await browser.close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 130, out.decode()
    assert problems == []
