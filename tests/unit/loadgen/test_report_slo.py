"""The report's SLO line says why, success rate included, and says when a run's results are partial."""

from __future__ import annotations

import json
from pathlib import Path

from kinfer.loadgen.report import write_report
from tests.unit.loadgen.test_report_html import RECORDS, _summary


def test_the_slo_line_carries_the_verdicts_reason_and_a_partial_run_says_so(tmp_path: Path) -> None:
    summary = _summary()
    message = "p99 over 50 ms: 12 of 30 requests failed or were dropped (40.00%), more than the 1% a p99 leaves"
    summary["slo"] = {"p99Ms": 50, "minSuccessRate": None, "met": False, "successRate": 0.6,
                      "message": message + "; success rate 60.00% (18 of 30 offered)"}  # fmt: skip
    summary.update(phase="Failed", incomplete=True, error="the generator was killed by SIGKILL")
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "records.csv").write_text(RECORDS)
    page = write_report(tmp_path).read_text()
    slo = page.split('id="slo">', 1)[1].split("</p>", 1)[0]
    assert slo.startswith("NOT met") and "12 of 30 requests failed" in slo and "success rate 60.00%" in slo
    assert "killed by SIGKILL" in slo and "partial" in slo
