"""`kinfer run` end to end: real gunicorn servers (null backend) and the real generator, as a user runs it."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

KINFER = [sys.executable, "-m", "kinfer.cli"]


def _manifest(tmp_path: Path, *, replicas: int = 1, delay_ms: float = 1, schedule: list[dict[str, Any]] | None = None,
              slo: dict[str, Any] | None = None, workers: int = 1) -> Path:  # fmt: skip
    svc = {
        "apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "svc"},
        "spec": {"model": {"name": "m", "format": "null", "delayMs": delay_ms}, "workers": workers, "threads": 4,
                 "replicas": replicas},
    }  # fmt: skip
    exp: dict[str, Any] = {
        "apiVersion": "kinfer.dev/v1alpha1", "kind": "LoadExperiment", "metadata": {"name": "exp"},
        "spec": {"target": {"service": "svc", "path": "/gpu"}, "seed": 1, "windowSize": 5,
                 "schedule": schedule or [{"rps": 20, "duration": "2s"}, {"rps": 40, "duration": "2s"}]},
    }  # fmt: skip
    if slo:
        exp["spec"]["slo"] = slo
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump_all([svc, exp]))
    return path


def _run(tmp_path: Path, manifest: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KINFER, "run", str(manifest), "--results", str(tmp_path / "results"), "--no-dashboard"],
        capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
    )  # fmt: skip


def _records(results: Path) -> list[dict[str, str]]:
    with (results / "records.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_a_local_run_serves_loads_and_writes_a_consistent_report(tmp_path: Path) -> None:
    done = _run(tmp_path, _manifest(tmp_path, slo={"p99Ms": 2000, "minSuccessRate": 0.9}))
    assert done.returncode == 0, done.stdout + done.stderr
    results = tmp_path / "results" / "exp"
    for name in ("summary.json", "records.csv", "stages.csv", "report.html", "rates.png", "latency.png",
                 "p99_vs_rps.png", "server_resources.png"):  # fmt: skip
        assert (results / name).stat().st_size > 0, name
    summary = json.loads((results / "summary.json").read_text())
    records = _records(results)
    assert 3 <= len(records) <= 6  # 4 s of schedule at 1 s records, plus the partial last one
    assert summary["sent"] == pytest.approx(sum(float(r["realRPS"]) for r in records), abs=1)
    assert summary["completed"] == pytest.approx(sum(float(r["realQPS"]) for r in records), abs=1)
    assert summary["sent"] == pytest.approx(120, rel=0.35)  # 20 rps x 2 s + 40 rps x 2 s, poisson
    assert [s["rps"] for s in summary["stages"]] == [20, 40]
    assert summary["slo"]["met"] is True
    report = (results / "report.html").read_text()
    assert "Stages" in report and "rates.png" in report and "met" in report
    # the server's resources, from the replica's /metrics scraped by the generator once per record
    measured = [r for r in records if r["serverCPU"] != ""]
    assert len(measured) >= len(records) - 2, records  # one scrape may be slow on a loaded machine
    assert all(float(r["serverMemoryMB"]) > 10 for r in measured)  # real gunicorn workers
    assert sum(float(r["serverCPU"]) for r in measured) > 0
    assert all(r["serverGPUUtil"] == r["serverGPUMemoryMB"] == "" for r in records)  # no GPU: empty, not 0
    assert summary["server"]["memoryMB"] > 10 and summary["server"]["gpuUtil"] is None
    assert [s["server"]["cpu"] is not None for s in summary["stages"]] == [True, True]
    assert "Latency and server resources per stage" in report
    assert "svc" in done.stdout and "met" in done.stdout


def test_two_replicas_share_the_requests(tmp_path: Path) -> None:
    done = _run(tmp_path, _manifest(tmp_path, replicas=2, schedule=[{"rps": 50, "duration": "2s"}]))
    assert done.returncode == 0, done.stdout + done.stderr
    spread = json.loads((tmp_path / "results" / "exp" / "balancer.json").read_text())
    assert len(spread["backends"]) == 2 and len(set(spread["backends"])) == 2
    total = sum(spread["requests"])
    assert total >= 60
    assert all(n >= total * 0.25 for n in spread["requests"]), spread


def test_a_failed_slo_exits_1(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, delay_ms=30, schedule=[{"rps": 10, "duration": "2s"}], slo={"p99Ms": 5})
    done = _run(tmp_path, manifest)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED" in done.stdout and "p99" in done.stdout


def test_a_bad_manifest_exits_2_naming_file_resource_and_field(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    docs = list(yaml.safe_load_all(manifest.read_text()))
    docs[0]["spec"]["workers"] = 0
    manifest.write_text(yaml.safe_dump_all(docs))
    done = _run(tmp_path, manifest, timeout=30)
    assert done.returncode == 2
    assert "manifest.yaml: InferenceService svc: spec.workers" in done.stderr


def test_a_missing_model_file_exits_2_before_starting_anything(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    docs = list(yaml.safe_load_all(manifest.read_text()))
    docs[0]["spec"]["model"] = {"name": "m", "format": "onnx", "path": "nowhere/model.onnx"}
    manifest.write_text(yaml.safe_dump_all(docs))
    done = _run(tmp_path, manifest, timeout=30)
    assert done.returncode == 2 and "spec.model.path nowhere/model.onnx" in done.stderr
    assert f"{tmp_path}/nowhere/model.onnx" in done.stderr and "do not exist on this machine" in done.stderr


def test_ctrl_c_mid_run_leaves_no_process_and_a_valid_partial_report(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, schedule=[{"rps": 20, "duration": "60s"}])
    results = tmp_path / "results" / "exp"
    proc = subprocess.Popen(
        [*KINFER, "run", str(manifest), "--results", str(tmp_path / "results"), "--no-dashboard"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not ((results / "records.csv").exists() and len(_records(results)) >= 2):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "no records after 90 s"
            time.sleep(0.2)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3  # gunicorn master + worker + generator
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, [p.pid for p in alive]
    summary = json.loads((results / "summary.json").read_text())
    assert summary["sent"] >= 20 and summary["durationS"] < 30
    assert (results / "report.html").exists() and "interrupted" in out


def test_the_seeds_manifest_names_the_host_paths_it_needs_before_starting_anything(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run([*KINFER, "run", str(root / "examples/mobilenet.yaml"), "--results", str(tmp_path),
                           "--no-dashboard", "--plain"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""
    assert "needs host paths that do not exist on this machine" in proc.stderr
    assert "/home/tank/yanan/model/ssd_mobilenet_v1_coco_2018_01_28.pb" in proc.stderr
    assert "/home/tank/yanan/data/coco-300/val2017" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no logs, no results: nothing was started


def test_a_closed_loop_with_a_request_count_runs_locally_and_is_reported_as_closed(tmp_path: Path) -> None:
    stages = [{"concurrency": 1, "duration": "300ms"}, {"concurrency": 3, "duration": "10s"}]
    manifest = _manifest(tmp_path, schedule=stages)
    docs = list(yaml.safe_load_all(manifest.read_text()))
    docs[1]["spec"].update(requests=600, thinkTime="5ms")
    manifest.write_text(yaml.safe_dump_all(docs))
    done = _run(tmp_path, manifest)
    assert done.returncode == 0, done.stdout + done.stderr
    results = tmp_path / "results" / "exp"
    summary = json.loads((results / "summary.json").read_text())
    assert summary["mode"] == "closed" and summary["sent"] == summary["completed"] == 600
    assert [s["concurrency"] for s in summary["stages"]] == [1, 3]
    assert summary["thinkTimeS"] == 0.005 and summary["requestsLimit"] == 600
    assert "Closed-loop results" in (results / "report.html").read_text()
    assert (results / "throughput_vs_concurrency.png").stat().st_size > 0
