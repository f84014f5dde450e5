"""The report reads a results directory and shows what a person needs: stages, server stages, resources."""

from __future__ import annotations

import json
from pathlib import Path

from kinfer.loadgen.report import write_report

RECORDS = """t,targetRPS,realRPS,realQPS,errors,dropped,p50Ms,p99Ms,maxMs,avgRPS,avgQPS,serviceRate,avg99thMs
1.0,10,10,10,0,0,3.0,9.0,9.5,10,10,1.0,9.0
2.0,20,20,19,1,0,4.0,19.0,25.0,15,14.5,0.967,14.0
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
    (tmp_path / "summary.json").write_text(json.dumps(_summary()))
    (tmp_path / "records.csv").write_text(RECORDS)
    (tmp_path / "server_resources.csv").write_text(
        "t,service,cpuPercent,rssMB,processes\n0.5,s,50,100,3\n1.5,s,150,120,3\n"
    )
    page = write_report(tmp_path).read_text()
    for png in ("rates.png", "latency.png", "p99_vs_rps.png", "server_resources.png"):
        assert (tmp_path / png).stat().st_size > 1000 and f'src="{png}"' in page
    assert "<td>infer</td><td>7.2</td><td>12.5</td>" in page
    assert "<td>CPU % (one core = 100)</td><td>100.0</td><td>150.0</td>" in page
    assert "<td>1</td><td>20</td><td>1</td><td>20</td><td>19</td><td>1</td>" in page  # stage 1 row
    assert 'id="slo">met' in page


def test_report_without_server_data_says_so(tmp_path: Path) -> None:
    summary = _summary()
    del summary["serverTimingMs"]
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "records.csv").write_text(RECORDS)
    page = write_report(tmp_path).read_text()
    assert "sent no <code>Server-Timing</code> header" in page and "No server resource samples" in page
    assert not (tmp_path / "server_resources.png").exists()
