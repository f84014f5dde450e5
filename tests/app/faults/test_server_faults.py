"""The model server failing under load: a worker killed, the whole server killed and restarted.

A real ``kinfer serve`` (gunicorn, null backend) on loopback, the real generator in-process writing
its results directory. Errors show up in the records of the seconds they happened in, the run goes
on, and every record measured before the fault is still there, unchanged, at the end.
"""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import requests

from tests.app.loadgen.conftest import RunHandle, StartRun
from tests.app.loadgen.support import eventually
from tests.app.server.conftest import KINFER, LISTENING, Server, ServerFactory


def _rows(results: Path) -> list[dict[str, str]]:
    with (results / "records.csv").open() as fh:
        return list(csv.DictReader(fh))


def _workers(server: Server) -> list[psutil.Process]:
    return psutil.Process(server.proc.pid).children()


async def _records_at_least(handle: RunHandle, n: int, within: float = 30) -> list[dict[str, Any]]:
    await eventually(lambda: len(handle.run.recorder.records) >= n, within=within)
    return [r.to_json() for r in handle.run.recorder.records]


async def test_a_worker_killed_mid_run_is_replaced_its_errors_are_counted_per_second_and_the_run_goes_on(
    serve: ServerFactory, start_run: StartRun, tmp_path: Path
) -> None:
    # two sync workers, each request 600 ms, 4 requests/s: both workers are always busy, so the one
    # killed has a request in flight
    server = serve("--format", "null", "--workers", "2", "--delay-ms", "600", "--timeout", "60")
    await eventually(lambda: len(_workers(server)) == 2)
    handle = await start_run(
        server.url + "/gpu", "--rps", "4", "--duration", "9", "--arrival", "uniform", "--timeout-ms", "8000"
    )
    before = await _records_at_least(handle, 3)
    victim = _workers(server)[0]
    victim.send_signal(signal.SIGKILL)
    killed_at = len(handle.run.recorder.records)
    run = await handle.finished(within=60)
    records = [r.to_json() for r in run.recorder.records]
    replaced = {p.pid for p in _workers(server)}
    assert victim.pid not in replaced and len(replaced) == 2, "gunicorn replaced the killed worker"
    errors = {i: r["errors"] for i, r in enumerate(records) if r["errors"]}
    assert errors and min(errors) >= killed_at - 1, records  # counted in the seconds after the kill
    summary = run.summary()
    print(f"errors per record: {[r['errors'] for r in records]} {summary['errorsByClass']}, kill after {killed_at}")
    # the killed request itself when the victim had one in flight (closed or reset: not every kill lands
    # on one), and requests the new worker answered 503 while it loaded its model
    assert summary["errors"] >= 1 and set(summary["errorsByClass"]) <= {"closed", "reset", "http_503"}
    assert any(r["realQPS"] > 0 for r in records[killed_at + 1 :]), "the run went on after the kill"
    assert summary["phase"] == "Succeeded"
    rows = _rows(tmp_path / "results")
    assert [float(r["realRPS"]) for r in rows[: len(before)]] == [r["realRPS"] for r in before]
    assert [r["errors"] for r in rows[: len(before)]] == [str(r["errors"]) for r in before]


def _start_on(port: int) -> subprocess.Popen[str]:
    """``kinfer serve`` on a given loopback port (the restart after the kill)."""
    proc = subprocess.Popen(
        [*KINFER, "serve", "--format", "null", "--workers", "1", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ},
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:
        if LISTENING.search(line):
            break
    return proc


async def test_the_whole_server_killed_and_restarted_shows_errors_then_recovery_record_by_record(
    serve: ServerFactory, start_run: StartRun, tmp_path: Path
) -> None:
    # killed, the server cannot remove its Prometheus multiprocess directory: it goes in tmp_path, not /tmp
    server = serve("--format", "null", "--workers", "1", env={"TMPDIR": str(tmp_path)})
    port = int(server.url.rsplit(":", 1)[1])
    handle = await start_run(server.url + "/gpu", "--rps", "20", "--duration", "10", "--arrival", "uniform")
    before = await _records_at_least(handle, 2)
    for proc in [*_workers(server), psutil.Process(server.proc.pid)]:
        proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    down_at = len(handle.run.recorder.records)
    await _records_at_least(handle, down_at + 2)  # two seconds with nothing listening
    restarted = _start_on(port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = await asyncio.to_thread(requests.get, f"http://127.0.0.1:{port}/v2/health/ready", timeout=2)
                if ready.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the restarted server never became ready"
            await asyncio.sleep(0.05)
        run = await handle.finished(within=60)
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(30)
        assert restarted.stderr is not None
        restarted.stderr.close()
    records = [r.to_json() for r in run.recorder.records]
    down = [i for i, r in enumerate(records) if r["errors"] > 0]
    assert down and all(i >= down_at - 1 for i in down), records
    assert any(records[i]["realQPS"] == 0 for i in down), "a second with nothing but errors"
    recovered = [i for i, r in enumerate(records) if i > max(down) and r["errors"] == 0 and r["realQPS"] > 0]
    assert recovered, records
    assert set(run.summary()["errorsByClass"]) <= {"connection", "reset", "closed", "http_503"}  # 503: loading
    assert all(r["errors"] == 0 for r in records[: len(before)])
    rows = _rows(tmp_path / "results")
    assert len(rows) == len(records)
    assert [int(r["errors"]) for r in rows] == [r["errors"] for r in records]
    print(f"errors per record: {[r['errors'] for r in records]}; completed: {[r['realQPS'] for r in records]}")
