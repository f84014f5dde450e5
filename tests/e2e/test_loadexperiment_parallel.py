"""Two generator pods share one experiment's rate: each gets half, the daemon polls both and merges;
``kubectl get lexp -w`` shows the live numbers; status is written once per record interval."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml

from kinfer.controller.settings import Settings
from kinfer.stored_results import read_chunks
from tests.e2e.operator_harness import Kubelet, condition, dump, install_crds, kinfer_operator, status_of
from tests.e2e.test_loadexperiment import plugin, stored_chunks
from tests.kube.cluster import Cluster, eventually

SERVER = {"apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "target"},
          "spec": {"model": {"name": "null", "format": "null"}, "service": {"type": "ClusterIP"}}}
EXPERIMENT: dict[str, Any] = {
    "apiVersion": "kinfer.dev/v1alpha1", "kind": "LoadExperiment", "metadata": {"name": "split"},
    "spec": {"target": {"service": "target"}, "arrival": "uniform", "windowSize": 3, "parallelism": 2,
             "schedule": [{"rps": 20, "duration": "8s"}], "slo": {"p99Ms": 1000}},
}


def status_patches(cluster: Cluster, name: str) -> int:
    """PATCHes of the experiment's status subresource the API server has received so far."""
    return sum(1 for r in cluster.emulator
               if "PATCH" in str(r.method) and r.url.path.endswith(f"/loadexperiments/{name}/status"))


async def test_parallel_generators_split_the_rate_and_merge_into_one_status(
    cluster: Cluster, tmp_path: Path
) -> None:
    await install_crds(cluster)
    async with Kubelet(cluster, tmp_path) as kubelet, kinfer_operator(Settings(metrics_port=0, results_linger_s=20)):
        await cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump_all([SERVER, EXPERIMENT]))
        async with cluster.kubectl_stream("get", "lexp", "split", "-w") as watch:
            # A Running row whose RPS column holds a number.
            await watch.wait_for_line(r"^split\s+Running\s+[\d.]+\s+\d+(\.\d+)?\s", timeout_s=30)
        job = cluster.get("jobs", "split-loadgen")
        assert job is not None and job["spec"]["parallelism"] == 2
        assert len(kubelet.running("split-loadgen")) == 2
        schedule = yaml.safe_load(cluster.get("configmaps", "split-schedule")["data"]["schedule.yaml"])  # type: ignore[index]
        assert schedule["stages"] == [{"duration": "8s", "rps": 10.0}]

        await eventually(lambda: (status_of(cluster, "lexp", "split").get("live") or {}).get("realRPS", 0) >= 18,
                         timeout_s=5)
        assert status_of(cluster, "lexp", "split")["targetRPS"] == 20

        before = status_patches(cluster, "split")
        await asyncio.sleep(3)
        written = status_patches(cluster, "split") - before
        assert 2 <= written <= 4, f"{written} status patches in 3 s"

        await eventually(lambda: status_of(cluster, "lexp", "split").get("phase") == "Succeeded", timeout_s=30)
        status = status_of(cluster, "lexp", "split")
        [stage] = status["stages"]
        assert 140 <= stage["sent"] <= 180 and stage["rps"] == 20, dump(status)
        assert condition(status, "SLOMet")["status"] == "True"
        # Percentiles come from both pods' histograms added up (exact), so the whole run's p99 is never
        # above the worst stage's and p50 <= p99 <= max hold for the merged distribution.
        lat = status["latencyMs"]
        assert 0 < lat["p50"] <= lat["p99"] <= lat["max"], dump(status)
        assert stage["latencyMs"]["p99"] == lat["p99"]  # one stage: the same merged histogram

        # Each generator's records stored apart; the summary merged from both pods' final summaries, its
        # percentiles (latency, service time, send lag) exact from their histograms.
        stored = read_chunks(stored_chunks(cluster, "split"))
        assert sorted(stored.records) == [0, 1] and all(len(stored.series(g)) >= 7 for g in (0, 1))
        summary = json.loads(cluster.get("configmaps", "split-results")["data"]["summary.json"])  # type: ignore[index]
        assert summary["source"] == "generators" and summary["percentiles"].startswith("exact"), summary
        assert summary["sent"] == status["sent"] and summary["latencyMs"]["p99"] == lat["p99"]
        assert summary["generators"] == 2 and summary["sendLagMs"]["p99"] is not None
        rc, _, err = await plugin(cluster, "report", "split", "--output", str(tmp_path / "report"))
        assert rc == 0, err
        merged = (tmp_path / "report" / "records.csv").read_text().splitlines()
        assert len(merged) == 1 + max(len(stored.series(0)), len(stored.series(1)))
        for g in (0, 1):
            rows = (tmp_path / "report" / f"records-g{g}.csv").read_text().splitlines()
            assert len(rows) == 1 + len(stored.series(g))


async def test_numbers_and_the_phase_wait_for_every_generator(cluster: Cluster, tmp_path: Path) -> None:
    """parallelism 4 with two generator pods stuck Pending: no half-rate numbers and no Succeeded when two
    finish; once the other two run, all four are merged."""
    await install_crds(cluster)
    held = {"2", "3"}

    def stuck(pod: dict[str, Any]) -> bool:
        index = (pod["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-completion-index")
        return index in held

    doc = {**EXPERIMENT, "metadata": {"name": "quad"},
           "spec": {**EXPERIMENT["spec"], "parallelism": 4, "schedule": [{"rps": 20, "duration": "3s"}]}}
    async with Kubelet(cluster, tmp_path, hold=stuck) as kubelet, \
            kinfer_operator(Settings(metrics_port=0, results_linger_s=30)):
        await cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump_all([SERVER, doc]))
        await eventually(lambda: status_of(cluster, "lexp", "quad").get("generators") == {"expected": 4,
                                                                                           "reporting": 2},
                         timeout_s=30)
        status = status_of(cluster, "lexp", "quad")
        assert "live" not in status and status.get("targetRPS") is None, dump(status)
        assert condition(status, "Progressing")["reason"] == "GeneratorsStarting", dump(status)
        # The two running generators finish their schedule; the experiment does not.
        await eventually(lambda: all(r.proc.returncode is None and r.ready for r in kubelet.running("quad")),
                         timeout_s=10)
        await asyncio.sleep(5)
        assert status_of(cluster, "lexp", "quad")["phase"] == "Running", dump(status_of(cluster, "lexp", "quad"))
        assert "live" not in status_of(cluster, "lexp", "quad")
        held.clear()
        await eventually(lambda: status_of(cluster, "lexp", "quad").get("phase") == "Succeeded", timeout_s=40)
        status = status_of(cluster, "lexp", "quad")
        assert status["generators"] == {"expected": 4, "reporting": 4}, dump(status)
        # Four pods × 5 RPS × 3 s: the whole offered load is counted, not half of it.
        assert 54 <= status["sent"] <= 66, dump(status)
