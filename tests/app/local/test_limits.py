"""`kinfer run` pins each replica's gunicorn tree to its cores and gives it its own GPU devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

KINFER = [sys.executable, "-m", "kinfer.cli"]


def _serve_trees(run: psutil.Process) -> list[list[psutil.Process]]:
    """Each ``kinfer serve`` below ``run`` with its forked workers."""
    out = []
    for proc in run.children(recursive=True):
        try:
            cmd = proc.cmdline()
        except psutil.Error:
            continue
        if "serve" in cmd and "kinfer.cli" in cmd and proc.parent() and "serve" not in proc.parent().cmdline():
            out.append([proc, *proc.children(recursive=True)])
    return out


def test_replicas_are_pinned_to_distinct_cores_and_devices(tmp_path: Path) -> None:
    svc = {
        "apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "svc"},
        "spec": {"model": {"name": "m", "format": "null", "delayMs": 1}, "workers": 2, "replicas": 2,
                 "resources": {"limits": {"cpu": "0.5"}}, "gpu": {"devices": "0,1"}},
    }  # fmt: skip
    exp = {
        "apiVersion": "kinfer.dev/v1alpha1", "kind": "LoadExperiment", "metadata": {"name": "exp"},
        "spec": {"target": {"service": "svc"}, "schedule": [{"rps": 10, "duration": "6s"}]},
    }  # fmt: skip
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump_all([svc, exp]))
    argv = [*KINFER, "run", str(manifest), "--results", str(tmp_path / "r"), "--no-dashboard", "--plain"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    seen: dict[str, tuple[set[int], str | None]] = {}
    try:
        run = psutil.Process(proc.pid)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            trees = _serve_trees(run)
            if len(trees) == 2 and all(len(t) >= 3 for t in trees):  # master + 2 workers each
                for tree in trees:
                    for p in tree:
                        seen[str(p.pid)] = (set(p.cpu_affinity()), p.environ().get("CUDA_VISIBLE_DEVICES"))
                break
            time.sleep(0.2)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    cores = sorted(min(c) for c, _ in seen.values())
    assert len(seen) >= 6, seen
    assert all(len(c) == 1 for c, _ in seen.values())  # 0.5 cores -> 1 whole core, workers inherit it
    usable = sorted(os.sched_getaffinity(0))
    first, second = usable[0], usable[1 % len(usable)]  # distinct cores where the machine has two
    assert set(cores) == {first, second}
    assert {(min(c), d) for c, d in seen.values()} == {(first, "0"), (second, "1")}
    assert "CPU affinity" in out and "rounds a fractional limit up" in out and "CUDA_VISIBLE_DEVICES=1" in out
    limits = json.loads((tmp_path / "r" / "exp" / "summary.json").read_text())["serverLimits"]
    assert limits["mechanism"] == "affinity" and limits["cores"] == [[first], [second]]
    assert limits["gpuDevices"] == ["0", "1"]
    report = (tmp_path / "r" / "exp" / "report.html").read_text()
    assert 'id="server-limits"' in report and "enforced by CPU affinity" in report and "rounds a fractional" in report
