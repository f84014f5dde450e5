"""The real ``kinfer loadgen`` command as a subprocess (generators in worker processes)."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.app.loadgen.support import TargetServer, eventually

KINFER = str(Path(sys.executable).parent / "kinfer")


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        KINFER, "loadgen", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def control_url(proc: asyncio.subprocess.Process) -> str:
    assert proc.stderr is not None
    line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
    match = re.search(r"(http://\S+)", line)
    assert match, line
    return match.group(1).rstrip("/")


async def test_a_run_writes_results_and_prints_a_line_per_record(target: TargetServer, tmp_path: Path) -> None:
    proc = await start(
        target.url(), "--rps", "50", "--duration", "2", "--output", str(tmp_path), "--control-port", "0"
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert sum(line.startswith("t=") for line in lines) >= 2
    assert lines[-1].startswith("done: Succeeded")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["sent"] == summary["completed"] == target.received
    assert summary["sent"] == pytest.approx(100, abs=35)
    rows = list(csv.DictReader((tmp_path / "records.csv").read_text().splitlines()))
    assert len(rows) == summary["records"] >= 2
    assert sum(float(r["realRPS"]) for r in rows) == pytest.approx(summary["sent"])
    assert (tmp_path / "rates.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "latency.png").stat().st_size > 0
    assert 'src="rates.png"' in (tmp_path / "report.html").read_text()


async def test_two_processes_share_the_rate_and_merge_exactly(target: TargetServer, tmp_path: Path) -> None:
    proc = await start(
        target.url(), "--rps", "100", "--duration", "2", "--processes", "2", "--arrival", "uniform",
        "--output", str(tmp_path), "--control-port", "0", "--quiet",
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["processes"] == 2
    assert summary["sent"] == summary["completed"] == target.received
    assert summary["sent"] == pytest.approx(200, abs=3)
    # uniform arrivals from two processes interleave: the server sees an even ~10 ms spacing
    gaps = [b - a for a, b in zip(target.arrivals, target.arrivals[1:], strict=False)]
    assert sorted(gaps)[len(gaps) // 2] == pytest.approx(0.01, abs=0.004)


async def test_sigint_flushes_everything_measured(target: TargetServer, tmp_path: Path) -> None:
    proc = await start(
        target.url(), "--rps", "50", "--duration", "60", "--output", str(tmp_path), "--control-port", "0"
    )
    await control_url(proc)
    await eventually(lambda: (tmp_path / "records.csv").exists()
                     and len((tmp_path / "records.csv").read_text().splitlines()) >= 3, within=20)  # fmt: skip
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["phase"] == "Stopped"
    assert summary["sent"] == target.received > 0
    assert summary["records"] == len((tmp_path / "records.csv").read_text().splitlines()) - 1


async def test_linger_keeps_the_final_status_readable(target: TargetServer) -> None:
    proc = await start(
        target.url(), "--rps", "20", "--duration", "1", "--control-port", "0", "--linger", "30", "--quiet"
    )
    url = await control_url(proc)
    async with aiohttp.ClientSession() as http:
        status: dict[str, object] = {}

        async def poll() -> None:
            async with http.get(url + "/api/status") as resp:
                status.update(await resp.json())

        deadline = asyncio.get_running_loop().time() + 20
        while status.get("phase") != "Succeeded":
            assert asyncio.get_running_loop().time() < deadline, status
            await poll()
            await asyncio.sleep(0.1)
        assert status["sent"] == target.received
        async with http.post(url + "/api/stop", json={}) as resp:
            assert resp.status == 200
    await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode == 0


async def test_a_failed_slo_exits_1(target: TargetServer) -> None:
    target.delay = 0.05
    proc = await start(target.url(), "--rps", "20", "--duration", "1", "--control-port", "-1", "--slo-p99-ms", "10")
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1, err.decode()


async def test_bad_input_exits_2_with_one_line() -> None:
    proc = await start("ftp://example/", "--rps", "1")
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert err.decode().count("\n") == 1
    assert "ftp://example/" in err.decode()


async def test_a_busy_control_port_is_bad_input(target: TargetServer) -> None:
    first = await start(target.url(), "--rps", "1", "--duration", "30", "--control-port", "0", "--quiet")
    port = (await control_url(first)).rsplit(":", 1)[1]
    try:
        proc = await start(target.url(), "--rps", "1", "--duration", "1", "--control-port", port)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 2
        assert err.decode().count("\n") == 1
        assert port in err.decode()
    finally:
        first.send_signal(signal.SIGTERM)
        await asyncio.wait_for(first.communicate(), 20)


async def test_ctrl_c_to_the_whole_process_group_keeps_the_workers_last_interval(
    target: TargetServer, tmp_path: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        KINFER, "loadgen", target.url(), "--rps", "50", "--duration", "60", "--processes", "2",
        "--output", str(tmp_path), "--control-port", "0", "--quiet",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    await control_url(proc)
    await eventually(lambda: target.received >= 60, within=20)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["phase"] == "Stopped"
    assert summary["sent"] == target.received


async def test_intensity_reaches_every_worker_process_within_a_second(target: TargetServer) -> None:
    proc = await start(
        target.url(), "--rps", "10", "--duration", "30", "--processes", "2", "--arrival", "uniform",
        "--control-port", "0", "--quiet",
    )  # fmt: skip
    url = await control_url(proc)
    try:
        await eventually(lambda: target.received >= 2, within=20)
        async with aiohttp.ClientSession() as http, http.post(url + "/api/intensity", json={"rps": 200}) as resp:
            assert resp.status == 200
        changed = asyncio.get_running_loop().time()
        before = target.received
        await eventually(lambda: target.received - before >= 40, within=5)
        assert asyncio.get_running_loop().time() - changed < 1.0
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 20)
