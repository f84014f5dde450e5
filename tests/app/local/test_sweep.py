"""`kinfer run sweep.yaml`: points one at a time as real local processes, a failed point recorded and the
sweep going on, the comparison written (sweep.json, sweep.csv, plots, report.html) and printed."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from kinfer.local.runner import READY_TIMEOUT_S

KINFER = [sys.executable, "-m", "kinfer.cli"]


def _sweep(tmp_path: Path, matrix: list[dict[str, Any]], **experiment: Any) -> Path:
    exp: dict[str, Any] = {"schedule": [{"concurrency": 2, "duration": "2s"}], "seed": 1, "windowSize": 2}
    exp.update(experiment)
    doc = {
        "apiVersion": "kinfer.dev/v1alpha1", "kind": "Sweep", "metadata": {"name": "study"},
        "spec": {"service": {"model": {"name": "m", "format": "null", "path": "junk.pb", "delayMs": 2},
                             "threads": 2},
                 "experiment": exp, "matrix": matrix, "cooldown": "200ms"},
    }  # fmt: skip
    (tmp_path / "junk.pb").write_text("not a model")
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _run(tmp_path: Path, manifest: Path) -> subprocess.CompletedProcess[str]:
    argv = [*KINFER, "run", str(manifest), "--results", str(tmp_path / "r"), "--no-dashboard", "--plain"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=tmp_path)


def test_points_run_one_at_a_time_a_failed_point_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    matrix = [{"path": "service.model.format", "values": ["null", "tf-graphdef"]},
              {"path": "experiment.schedule[0].concurrency", "values": [1, 3]}]  # fmt: skip
    done = _run(tmp_path, _sweep(tmp_path, matrix, slo={"p99Ms": 2000}))
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "r" / "study"
    status = json.loads((out / "sweep.json").read_text())
    assert status["total"] == 4 and status["done"] == 4 and status["phase"] == "Succeeded"
    rows = status["points"]
    formats, clients = ("null", "tf-graphdef"), (1, 3)
    expected = [{"service.model.format": f, "experiment.schedule[0].concurrency": c} for f in formats for c in clients]
    assert [r["parameters"] for r in rows] == expected  # the first path varies slowest
    assert [r["phase"] for r in rows] == ["Succeeded", "Succeeded", "Failed", "Failed"]
    assert all("exited with code 2 before it was ready" in r["message"] for r in rows[2:])  # no --inputs
    for row in rows[:2]:
        assert row["sloMet"] is True and row["throughput"] > 0
        assert 0 < row["latencyMs"]["p50"] <= row["latencyMs"]["p99"]
        assert row["latencyMs"]["mean"] > 0 and row["experiment"] == f"study-p{row['index']}"
        summary = json.loads((out / f"p{row['index']}" / "summary.json").read_text())
        assert summary["completed"] / summary["durationS"] == row["throughput"]
        assert (out / f"p{row['index']}" / "report.html").stat().st_size > 0
    assert [s["concurrency"] for s in json.loads((out / "p1" / "summary.json").read_text())["stages"]] == [3]
    assert status["best"]["index"] in (0, 1) and status["objective"] == "throughput"
    assert status["best"]["value"] == max(r["throughput"] for r in rows[:2])
    with (out / "sweep.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["phase"] for r in table] == ["Succeeded", "Succeeded", "Failed", "Failed"]
    assert table[0]["experiment.schedule[0].concurrency"] == "1" and float(table[1]["p99Ms"]) > 0
    for name in ("report.html", "throughput_vs_concurrency.png", "latency_per_point.png", "sweep.yaml"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.html").read_text()
    assert "Comparison" in report and "p99 ms" in report and "CPU cores" in report and "p3/report.html" in report
    assert "sweep study: throughput" in done.stdout and "best for throughput" in done.stdout
    assert "point p2 failed" in done.stdout
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert not leftovers  # every point's processes are gone


def test_no_point_meeting_the_slo_is_exit_1(tmp_path: Path) -> None:
    matrix = [{"path": "service.workers", "values": [1]}]
    done = _run(tmp_path, _sweep(tmp_path, matrix, slo={"p99Ms": 0.001}))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no point met the SLO" in done.stdout
    status = json.loads((tmp_path / "r" / "study" / "sweep.json").read_text())
    assert status["points"][0]["sloMet"] is False and status["best"] is None


def test_a_bad_matrix_path_is_exit_2_naming_it_before_anything_starts(tmp_path: Path) -> None:
    for path, named in (("service.noSuchField", "service.noSuchField"),
                        ("experiment.schedule[4].concurrency", "index 4 out of range")):  # fmt: skip
        done = _run(tmp_path, _sweep(tmp_path, [{"path": path, "values": [1, 2]}]))
        assert done.returncode == 2, done.stdout + done.stderr
        assert named in done.stderr and "Sweep study" in done.stderr and len(done.stderr.splitlines()) == 1
        assert not (tmp_path / "r").exists()


def test_a_model_that_fails_to_load_fails_its_point_without_waiting_for_the_readiness_timeout(tmp_path: Path) -> None:
    matrix = [{"path": "service.model.format", "values": ["onnx", "null"]}]  # junk.pb is no ONNX model
    started = time.monotonic()
    done = _run(tmp_path, _sweep(tmp_path, matrix))
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    first, second = json.loads((tmp_path / "r" / "study" / "sweep.json").read_text())["points"]
    assert first["phase"] == "Failed" and "cannot become ready: model failed to load" in first["message"]
    assert second["phase"] == "Succeeded"
    assert elapsed < READY_TIMEOUT_S  # told by the server's readiness answer, not by the timeout
