"""Every seed study in examples/ runs: each manifest, scaled down in time, through `kinfer run` on real local
processes, with the same shape (kinds, matrix paths, stages, targets) and the model swapped for the null
backend (the tiny model's dataset stands in for the images, at the sizes seed 004 sends)."""

from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SEEDS = sorted((ROOT / "examples").glob("seed-*.yaml"))
KINFER = [sys.executable, "-m", "kinfer.cli"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ResNet-50-shaped model's image datasets (full size, 16 px and 32 px)."""
    out = tmp_path_factory.mktemp("tiny") / "resnet50"
    subprocess.run([*KINFER, "model", "build", "resnet50", "--tiny", "--no-savedmodel", "--sizes", "16,32",
                    "--output", str(out)], check=True, capture_output=True, timeout=300)  # fmt: skip
    return out


def _dataset(tiny: Path, payload_dir: str) -> str:
    """The tiny dataset standing in for ``payload_dir`` (same size suffix when it names one)."""
    name = Path(payload_dir).name
    return str(tiny / name) if (tiny / name).is_dir() else str(tiny / "dataset")


def _service(spec: dict[str, Any], tiny: Path) -> None:
    spec["model"] = {"name": spec["model"]["name"], "format": "null", "delayMs": 2}
    spec["workers"] = min(spec.get("workers", 1), 2)
    if "dataset" in spec:
        spec["dataset"] = str(tiny / "dataset")


def _experiment(spec: dict[str, Any], tiny: Path) -> None:
    for stage in spec.get("schedule", []):
        stage["duration"] = "2s"
        for key in ("rps", "rampTo"):
            if key in stage:
                stage[key] = min(stage[key], 100)
    target = spec.get("target", {})
    if str(target.get("payload", "")).startswith("dataset:"):
        target["payload"] = "dataset:" + _dataset(tiny, target["payload"].split(":", 1)[1])
    if "requests" in spec:
        spec["requests"] = min(spec["requests"], 1000)
    spec["windowSize"] = min(spec.get("windowSize", 60), 5)
    if spec.get("slo", {}).get("p99Ms") is not None:
        spec["slo"]["p99Ms"] = max(spec["slo"]["p99Ms"], 5000)  # a shared test machine stalls; the shape stays
        spec["slo"].pop("minSuccessRate", None)


def scaled(doc: dict[str, Any], tiny: Path) -> dict[str, Any]:
    """``doc`` scaled down: 2 s stages, at most 100 RPS and 1000 requests, at most two values per matrix path,
    the null backend, the tiny datasets; kinds, paths and targets unchanged."""
    doc = copy.deepcopy(doc)
    spec = doc["spec"]
    if doc["kind"] == "InferenceService":
        _service(spec, tiny)
    elif doc["kind"] == "LoadExperiment":
        _experiment(spec, tiny)
    else:
        _service(spec["service"], tiny)
        _experiment(spec["experiment"], tiny)
        spec["cooldown"] = "0s"
        for axis in spec["matrix"]:
            axis["values"] = axis["values"][:2]
            if axis["path"] == "experiment.target.payload":
                axis["values"] = ["dataset:" + _dataset(tiny, v.split(":", 1)[1]) for v in axis["values"]]
            if axis["path"].endswith(".rps"):
                axis["values"] = [min(v, 100) for v in axis["values"]]
    return doc


def _run(tmp_path: Path, path: Path, tiny: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    docs = [scaled(d, tiny) for d in yaml.safe_load_all(path.read_text()) if d]
    manifest = tmp_path / path.name
    manifest.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    argv = [*KINFER, "run", str(manifest), "--results", str(tmp_path / "r"), "--no-dashboard", "--plain"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path), tmp_path / "r"


def test_every_seed_has_an_example() -> None:
    assert {p.name.split("-")[1] for p in SEEDS} == {"000", "001", "002", "003", "004"}
    readme = (ROOT / "examples" / "README.md").read_text()
    for path in SEEDS:
        assert path.name in readme, f"{path.name} is not in examples/README.md"


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.stem)
def test_the_example_runs_scaled_down(path: Path, tmp_path: Path, tiny: Path) -> None:
    done, results = _run(tmp_path, path, tiny)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        name = doc["metadata"]["name"]
        if doc["kind"] == "LoadExperiment":
            summary = json.loads((results / name / "summary.json").read_text())
            assert len(summary["stages"]) == len(doc["spec"]["schedule"]) and summary["completed"] > 0
            assert summary["errors"] == 0 or summary["errors"] == {} or not any(summary["errors"].values())
        elif doc["kind"] == "Sweep":
            status = json.loads((results / name / "sweep.json").read_text())
            expected = 1
            for axis in doc["spec"]["matrix"]:
                expected *= min(len(axis["values"]), 2)
            assert status["total"] == expected and status["done"] == expected
            assert [r["phase"] for r in status["points"]] == ["Succeeded"] * expected, status["points"]
            assert list(status["points"][0]["parameters"]) == [a["path"] for a in doc["spec"]["matrix"]]
            assert status["best"] is not None
            with (results / name / "sweep.csv").open() as fh:
                assert len(list(csv.DictReader(fh))) == expected
            assert f"sweep {name}" in done.stdout
            closed = "concurrency" in doc["spec"]["experiment"]["schedule"][0]
            plot = "throughput_vs_concurrency.png" if closed else "p99_vs_rate.png"
            assert (results / name / plot).stat().st_size > 0, plot


def test_seed_002_prints_mean_response_time_and_cpu_per_point(tmp_path: Path, tiny: Path) -> None:
    (path,) = [p for p in SEEDS if p.name.startswith("seed-002-")]
    done, results = _run(tmp_path, path, tiny)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "sweep seed002:" in line)
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("best for"))
    table = "\n".join(lines[start : end + 1])
    (tmp_path / "seed-002-table.txt").write_text(table + "\n")
    header = next(line for line in lines[start:end] if "mean ms" in line)
    assert "replicas" in header and "limits.cpu" in header and "concurrency" in header and "CPU cores" in header
    rows = [line for line in lines[start:end] if line.lstrip("│ ").startswith("p") and "Succeeded" in line]
    assert len(rows) == 8  # 2 replicas x 2 CPU limits x 2 concurrencies, scaled down from 3 x 3 x 3
    status = json.loads((results / "seed002" / "sweep.json").read_text())
    for row in status["points"]:
        assert row["latencyMs"]["mean"] > 0 and row["server"]["cpu"] >= 0
        assert row["cpuLimit"]["mechanism"] == "affinity"
    assert status["notes"][0].startswith("CPU limits are enforced locally by CPU affinity")
    assert "rounds up" in (results / "seed002" / "report.html").read_text()  # the report says which mechanism
    print(table)
