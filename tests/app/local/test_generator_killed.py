"""``kinfer run`` when its generator is killed with SIGKILL: the records so far stay, the run says Failed and why."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psutil

from tests.app.local.test_run import KINFER, _manifest, _records


def test_a_generator_killed_with_sigkill_keeps_its_records_and_the_run_fails_saying_why(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, schedule=[{"rps": 20, "duration": "60s"}], slo={"p99Ms": 5000})
    results = tmp_path / "results" / "exp"
    proc = subprocess.Popen(
        [*KINFER, "run", str(manifest), "--results", str(tmp_path / "results"), "--no-dashboard", "--plain"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not ((results / "records.csv").exists() and len(_records(results)) >= 3):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "no records after 90 s"
            time.sleep(0.2)
        (generator,) = [
            p for p in psutil.Process(proc.pid).children(recursive=True) if "loadgen" in " ".join(p.cmdline())
        ]
        before = _records(results)
        generator.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    assert "killed" in out or "-9" in out
    after = _records(results)
    assert after[: len(before)] == before  # every record written before the kill is kept as it was
    summary = json.loads((results / "summary.json").read_text())
    assert summary["phase"] == "Failed" and summary["incomplete"] is True
    assert "killed by SIGKILL" in summary["error"]
    assert summary["sent"] >= sum(float(r["realRPS"]) for r in before) - 1
    assert summary["slo"]["met"] is False
    assert "run failed" in out
