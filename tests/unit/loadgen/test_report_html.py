"""The report reads a results directory and shows what a person needs: stages, server stages, resources
(the records' serverCPU/serverMemoryMB/serverGPUUtil/serverGPUMemoryMB and the stages' ``server`` means)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kinfer.loadgen.report import write_report

RECORDS = """t,targetRPS,realRPS,realQPS,errors,dropped,p50Ms,p99Ms,maxMs,avgRPS,avgQPS,serviceRate,avg99thMs
1.0,10,10,10,0,0,3.0,9.0,9.5,10,10,1.0,9.0
2.0,20,20,19,1,0,4.0,19.0,25.0,15,14.5,0.967,14.0
"""
#: The same records with the server's resources (no GPU: empty cells), as records.csv ends them.
WITH_SERVER = """t,targetRPS,realRPS,realQPS,errors,dropped,p50Ms,p99Ms,maxMs,avgRPS,avgQPS,serviceRate,avg99thMs,\
serverCPU,serverMemoryMB,serverGPUUtil,serverGPUMemoryMB
1.0,10,10,10,0,0,3.0,9.0,9.5,10,10,1.0,9.0,0.5,100,,
2.0,20,20,19,1,0,4.0,19.0,25.0,15,14.5,0.967,14.0,1.5,120,,
"""


def _summary() -> dict[str, object]:
    lat = {"p50": 3.5, "p90": 8.0, "p99": 18.0, "p999": 25.0, "max": 25.0, "mean": 4.0}
    return {
        "sent": 30, "completed": 29, "errors": 1, "dropped": 0, "durationS": 2.0, "achievedRPS": 15.0,
        "latencyMs": lat, "serviceTimeMs": lat, "sendLagMs": {"p50": 0.1, "p99": 0.4, "max": 1.0},
        "stages": [
            {"rps": 10, "durationS": 1, "sent": 10, "completed": 10, "errors": 0, "dropped": 0, "latencyMs": lat,
             "serviceRate": 1.0},
            {"rps": 20, "durationS": 1, "sent": 20, "completed": 19, "errors": 1, "dropped": 0,
             "latencyMs": {**lat, "p99": 19.0}, "serviceRate": 0.95},
        ],
        "slo": {"p99Ms": 50, "minSuccessRate": 0.9, "met": True},
        "serverTimingMs": {"infer": {"mean": 7.25, "p99": 12.5}, "preprocess": {"mean": 1.5, "p99": 2.0}},
    }  # fmt: skip


def test_report_has_plots_stage_table_server_timing_and_resources(tmp_path: Path) -> None:
    summary = _summary()
    no_gpu = {"gpuUtil": None, "gpuMemoryMB": None}
    summary["server"] = {"cpu": 1.0, "memoryMB": 110.0, **no_gpu}
    stages: Any = summary["stages"]
    stages[0]["server"] = {"cpu": 0.5, "memoryMB": 100.0, **no_gpu}
    stages[1]["server"] = {"cpu": 1.5, "memoryMB": 120.0, **no_gpu}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "records.csv").write_text(WITH_SERVER)
    page = write_report(tmp_path).read_text()
    for png in ("rates.png", "latency.png", "p99_vs_rps.png", "server_resources.png"):
        assert (tmp_path / png).stat().st_size > 1000 and f'src="{png}"' in page
    # the server's plot sits beside the latency plot
    assert page.index('src="latency.png"') < page.index('src="server_resources.png"') < page.index('src="p99_vs_rps')
    assert "<td>infer</td><td>7.2</td><td>12.5</td>" in page
    assert "<td>CPU (cores)</td><td>1.00</td><td>1.50</td>" in page
    assert "<td>memory MB</td><td>110.0</td><td>120.0</td>" in page
    assert "<td>GPU %</td><td>-</td><td>-</td>" in page  # no GPU: empty, not 0
    # the seed's table: rate -> p99 -> GPU % -> CPU -> memory, one column per stage
    seed = page[page.index('id="seed-table"') :]
    assert "<th>RPS</th><th>10</th><th>20</th>" in seed
    assert "<td>99th latency ms</td><td>18.0</td><td>19.0</td>" in seed
    assert "<td>GPU %</td><td>-</td><td>-</td></tr><tr><td>CPU (cores)</td><td>0.50</td><td>1.50</td>" in seed
    assert "<td>memory MB</td><td>100.0</td><td>120.0</td>" in seed
    assert "<td>1</td><td>20</td><td>1</td><td>20</td><td>19</td><td>1</td>" in page  # stage 1 row
    assert 'id="slo">met' in page


def test_report_without_server_data_says_so(tmp_path: Path) -> None:
    summary = _summary()
    del summary["serverTimingMs"]
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "records.csv").write_text(RECORDS)
    page = write_report(tmp_path).read_text()
    assert "sent no <code>Server-Timing</code> header" in page and "No server resources were measured" in page
    assert not (tmp_path / "server_resources.png").exists()


def test_a_gpu_run_shows_gpu_percent_per_stage_and_in_the_plot(tmp_path: Path) -> None:
    summary = _summary()
    with_gpu = {"cpu": 0.25, "memoryMB": 900.0, "gpuUtil": 41.9, "gpuMemoryMB": 2048.0}
    summary["server"] = with_gpu
    for stage in summary["stages"]:  # type: ignore[attr-defined]
        stage["server"] = with_gpu
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    records = WITH_SERVER.replace("100,,", "100,40.0,2048").replace("120,,", "120,43.8,2048")
    (tmp_path / "records.csv").write_text(records)
    page = write_report(tmp_path).read_text()
    seed = page[page.index('id="seed-table"') :]
    assert "<td>GPU %</td><td>41.9</td><td>41.9</td>" in seed
    assert "<td>GPU %</td><td>41.9</td><td>43.8</td>" in page  # whole run: mean, max
    assert "Server CPU (cores) and GPU utilization and memory per record" in page
