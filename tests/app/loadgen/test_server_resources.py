"""A real ``kinfer loadgen --server-metrics`` against a real ``kinfer serve`` (null backend, two gunicorn
workers): every record carries the server's CPU (cores) and memory, scraped from its ``/metrics``; no
GPU means empty GPU fields, not zeros; ``POST /api/server-metrics`` (with the control token) replaces
the scraped pods while the run goes on, a pod that cannot be scraped empties the records without
holding up the sending, and summary.json and stages.csv carry the means."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tests.app.server.conftest import ServerFactory, serve  # noqa: F401  (the fixture)

KINFER = [sys.executable, "-m", "kinfer.cli"]
TOKEN = "resources-Token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _records(control: str, since: int = 0) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = requests.get(f"{control}/api/records?since={since}", timeout=10).json()["records"]
    return records


def _wait_records(control: str, count: int, within: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while len(records := _records(control)) < count:
        assert time.monotonic() < deadline, records
        time.sleep(0.1)
    return records


def test_records_carry_the_servers_cpu_and_memory_and_the_scraped_pods_change_at_run_time(
    serve: ServerFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    server = serve("--format", "null", "--workers", "2", "--threads", "2", "--delay-ms", "2")
    metrics = server.url + "/metrics"
    results = tmp_path / "results"
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text("- {rps: 30, duration: 4s}\n- {rps: 60, duration: 7s}\n")
    proc = subprocess.Popen(
        [*KINFER, "loadgen", server.url + "/gpu", "--schedule", str(schedule), "--arrival", "uniform",
         "--control-port", "0", "--control-token", TOKEN, "--output", str(results), "--quiet",
         "--server-metrics", metrics],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        match = re.search(r"(http://\S+?)/?$", proc.stderr.readline().strip())
        assert match, proc.stderr.read()
        control = match.group(1)
        api = f"{control}/api/server-metrics"

        first = _wait_records(control, 3)
        assert all(r["serverMemoryMB"] > 20 for r in first[1:])  # two real gunicorn workers
        # only a state change with the token; a bad body is a 400 naming the problem
        assert requests.post(api, json={"urls": [metrics]}, timeout=10).status_code == 401
        bad = requests.post(api, json={"urls": ["ftp://x/metrics"]}, headers=AUTH, timeout=10)
        assert bad.status_code == 400 and "ftp://x/metrics" in bad.json()["error"]
        assert requests.post(api, json={"pods": []}, headers=AUTH, timeout=10).status_code == 400
        # a pod that cannot be scraped (nothing listens on port 1): its records are empty, not zero
        dead = "http://127.0.0.1:1/metrics"
        moved = requests.post(api, json={"urls": [dead]}, headers=AUTH, timeout=10)
        assert moved.status_code == 200 and moved.json() == {"urls": [dead]}
        switched = len(_records(control))
        during = _wait_records(control, switched + 3)[switched + 1 :]
        assert all(r["serverCPU"] is None and r["serverMemoryMB"] is None for r in during), during
        assert all(r["realRPS"] > 0 for r in during)  # the sending went on
        status = requests.get(f"{control}/api/status", timeout=10).json()
        assert status["serverMetrics"]["urls"] == [dead] and status["serverMetrics"]["error"]
        # back to the server: numbers again
        assert requests.post(api, json={"urls": [metrics]}, headers=AUTH, timeout=10).status_code == 200
        back = len(_records(control))
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    with (results / "records.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[-4:] == ["serverCPU", "serverMemoryMB", "serverGPUUtil", "serverGPUMemoryMB"]
    assert all(r["serverGPUUtil"] == "" and r["serverGPUMemoryMB"] == "" for r in rows)  # no GPU: empty
    measured = [r for i, r in enumerate(rows) if i not in range(switched, back + 2)]
    with_cpu = [r for r in measured if r["serverCPU"] != ""]
    assert len(with_cpu) >= len(measured) - 2, rows  # a scrape may miss a record on a loaded machine
    assert all(float(r["serverCPU"]) > 0 and float(r["serverMemoryMB"]) > 20 for r in with_cpu), rows
    summary = json.loads((results / "summary.json").read_text())
    assert summary["server"]["cpu"] > 0 and summary["server"]["memoryMB"] > 20
    assert summary["server"]["gpuUtil"] is None and summary["server"]["gpuMemoryMB"] is None
    assert [s["server"]["cpu"] > 0 for s in summary["stages"]] == [True, True]
    with (results / "stages.csv").open() as fh:
        stages = list(csv.DictReader(fh))
    assert float(stages[1]["serverCPU"]) > 0 and stages[1]["serverGPUUtil"] == ""
    report = (results / "report.html").read_text()
    assert 'id="seed-table"' in report and (results / "server_resources.png").stat().st_size > 1000
