"""LoadExperiment lifecycle around the happy path: waiting for a target that does not exist yet, then
``spec.stop: true`` ending the run gracefully with its results kept."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import yaml

from kinfer.controller.settings import Settings
from kinfer.stored_results import read_chunks
from tests.e2e.operator_harness import Kubelet, condition, dump, install_crds, kinfer_operator, status_of
from tests.e2e.test_loadexperiment import plugin, stored_chunks
from tests.kube.cluster import Cluster, eventually
from tests.kube.kubectl import columns

SERVER = {"apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "later"},
          "spec": {"model": {"name": "null", "format": "null"}, "service": {"type": "ClusterIP"}}}
EXPERIMENT: dict[str, Any] = {
    "apiVersion": "kinfer.dev/v1alpha1", "kind": "LoadExperiment", "metadata": {"name": "stoppable"},
    "spec": {"target": {"service": "later"}, "arrival": "uniform", "windowSize": 5,
             "schedule": [{"rps": 20, "duration": "2m"}], "slo": {"p99Ms": 1000, "minSuccessRate": 0.99}},
}


async def test_waits_for_its_target_then_stops_gracefully(cluster: Cluster, tmp_path: Path) -> None:
    await install_crds(cluster)
    async with Kubelet(cluster, tmp_path) as kubelet, kinfer_operator(Settings(metrics_port=0, results_linger_s=20)):
        await cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(EXPERIMENT))
        await eventually(lambda: status_of(cluster, "lexp", "stoppable").get("phase") == "WaitingForTarget",
                         timeout_s=10)
        progressing = condition(status_of(cluster, "lexp", "stoppable"), "Progressing")
        assert (progressing["status"], progressing["reason"]) == ("False", "TargetNotFound")
        assert "later" in progressing["message"]
        _, out, _ = await cluster.kubectl("get", "lexp", "stoppable")
        assert columns(out)[0]["PHASE"] == "WaitingForTarget"
        assert cluster.list("jobs", "default") == []

        await cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(SERVER))
        await eventually(lambda: (status_of(cluster, "lexp", "stoppable").get("live") or {}).get("realRPS"),
                         timeout_s=30)
        # A generator that stops answering: the condition says so, the daemon backs off, then resumes.
        [generator] = kubelet.running("stoppable-loadgen")
        os.kill(generator.proc.pid, signal.SIGSTOP)
        try:
            await eventually(lambda: condition(status_of(cluster, "lexp", "stoppable"), "Progressing").get("reason")
                             == "GeneratorUnreachable", timeout_s=10)
            unreachable = condition(status_of(cluster, "lexp", "stoppable"), "Progressing")
            assert unreachable["status"] == "Unknown" and generator.ip in unreachable["message"]
        finally:
            os.kill(generator.proc.pid, signal.SIGCONT)
        await eventually(lambda: condition(status_of(cluster, "lexp", "stoppable"), "Progressing").get("reason")
                         == "Running", timeout_s=15)

        await cluster.kubectl("patch", "lexp", "stoppable", "--type=merge", "-p", '{"spec":{"stop":true}}')
        await cluster.kubectl("wait", "--for=jsonpath={.status.phase}=Stopped", "--timeout=20s", "lexp/stoppable",
                              timeout_s=30)
        status = status_of(cluster, "lexp", "stoppable")
        assert status["stages"][0]["sent"] > 0, dump(status)
        assert condition(status, "SLOMet")["status"] == "True", dump(status)
        assert condition(status, "Progressing")["reason"] == "Stopped"
        assert cluster.get("configmaps", "stoppable-results") is not None
        # The generator was released from its linger: it exits and the Job completes.
        await eventually(lambda: not kubelet.running("stoppable-loadgen"), timeout_s=10)
        await eventually(lambda: (cluster.get("jobs", "stoppable-loadgen") or {}).get("status", {}).get(
            "succeeded") == 1, timeout_s=10)


async def test_capacity_mode_finds_the_highest_rate_meeting_the_slo(cluster: Cluster, tmp_path: Path) -> None:
    await install_crds(cluster)
    server = {**SERVER, "metadata": {"name": "fast"}}
    doc = {**EXPERIMENT, "metadata": {"name": "capacity"},
           "spec": {**EXPERIMENT["spec"], "target": {"service": "fast"}, "mode": "capacity", "schedule": [],
                    # short probes of few requests: a loose stability tolerance, so each takes 3 windows
                    "capacity": {"minRPS": 5, "maxRPS": 40, "probeDuration": "1500ms", "precision": 0.3,
                                 "tolerance": 0.95, "maxWindows": 3}}}
    async with Kubelet(cluster, tmp_path), kinfer_operator(Settings(metrics_port=0, results_linger_s=20)):
        await cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump_all([server, doc]))
        await eventually(lambda: status_of(cluster, "lexp", "capacity").get("phase") == "Running", timeout_s=30)
        args = cluster.get("jobs", "capacity-loadgen")["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--mode") + 1] == "capacity" and "--schedule" not in args
        await eventually(lambda: status_of(cluster, "lexp", "capacity").get("phase") == "Succeeded", timeout_s=90)
        status = status_of(cluster, "lexp", "capacity")
        capacity = status["capacity"]
        # A null-backend server meets p99 <= 1 s at every probed rate: doubling 5 -> 40 ends at maxRPS.
        assert [p["rps"] for p in capacity["probes"]] == [5, 10, 20, 40], dump(status)
        assert capacity["rps"] == 40 and capacity["p99Ms"] > 0
        slo = condition(status, "SLOMet")
        assert (slo["status"], slo["reason"]) == ("True", "CapacityFound"), dump(status)
        results = cluster.get("configmaps", "capacity-results")
        assert results is not None and '"capacity"' in results["data"]["summary.json"]


async def test_a_generator_killed_mid_run_fails_the_experiment_keeping_what_it_measured(
    cluster: Cluster, tmp_path: Path
) -> None:
    await install_crds(cluster)
    doc = {**EXPERIMENT, "metadata": {"name": "killed"},
           "spec": {**EXPERIMENT["spec"], "schedule": [{"rps": 20, "duration": "30s"}]}}
    async with Kubelet(cluster, tmp_path) as kubelet, kinfer_operator(Settings(metrics_port=0, results_linger_s=20)):
        await cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump_all([SERVER, doc]))
        await eventually(lambda: (status_of(cluster, "lexp", "killed").get("sent") or 0) >= 40, timeout_s=30)
        [generator] = kubelet.running("killed-loadgen")
        generator.proc.send_signal(signal.SIGKILL)
        await eventually(lambda: status_of(cluster, "lexp", "killed").get("phase") == "Failed", timeout_s=20)
        status = status_of(cluster, "lexp", "killed")
        progressing = condition(status, "Progressing")
        assert progressing["reason"] == "GeneratorFailed", dump(status)
        assert "exit code 137 (Error)" in progressing["message"] and "killed-loadgen-0" in progressing["message"]
        assert condition(status, "SLOMet")["status"] == "False"
        assert status["sent"] >= 40, dump(status)  # what was measured before the kill stays
        summary = json.loads(cluster.get("configmaps", "killed-results")["data"]["summary.json"])  # type: ignore[index]
        assert summary["incomplete"] is True and "a generator ended before the run did" in summary["incompleteReason"]
        assert summary["sent"] >= 40
        # the generator is gone: the summary (§9's shape) comes from what the operator stored during the run
        assert summary["source"] == "stored" and "stored during the run" in summary["incompleteReason"], summary
        for key in ("durationS", "achievedRPS", "latencyMs", "serviceTimeMs", "sendLagMs"):
            assert summary.get(key), (key, summary)
        stored = read_chunks(stored_chunks(cluster, "killed"))
        assert len(stored.series(0)) >= 1 and summary["storedRecords"] == len(stored.series(0))
        rc, out, err = await plugin(cluster, "report", "killed", "--output", str(tmp_path / "report"))
        assert rc == 1 and "NOT MET" in out, (out, err)  # the run failed: the verdict says so
        written = json.loads((tmp_path / "report" / "summary.json").read_text())
        assert written["incomplete"] and (tmp_path / "report" / "report.html").exists()
        assert len((tmp_path / "report" / "records.csv").read_text().splitlines()) == len(stored.series(0)) + 1
        assert len(kubelet.started) == 2  # the generator was not started again (no rerun mixing two runs)


async def test_generators_slow_to_start_are_waited_for_not_backed_off(cluster: Cluster, tmp_path: Path) -> None:
    """A generator container that takes seconds to listen (a slow node, a cold interpreter) is starting,
    not unreachable: no ``GeneratorUnreachable``, and the first numbers come about one record interval
    after the last generator is Ready, not after an exponential backoff grown while it started."""
    await install_crds(cluster)
    doc = {**EXPERIMENT, "metadata": {"name": "slow"},
           "spec": {**EXPERIMENT["spec"], "parallelism": 2, "schedule": [{"rps": 20, "duration": "40s"}]}}
    slow = Kubelet(cluster, tmp_path, startup_delay_s=lambda pod: 6.0 if "-loadgen-" in pod["metadata"]["name"] else 0)
    async with slow as kubelet, kinfer_operator(Settings(metrics_port=0, results_linger_s=20)):
        await cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump_all([SERVER, doc]))
        loop = asyncio.get_running_loop()
        reasons: list[str] = []
        started = all_ready = first_numbers = None
        deadline = loop.time() + 60
        while first_numbers is None and loop.time() < deadline:
            status = status_of(cluster, "lexp", "slow")
            reasons.append(condition(status, "Progressing").get("reason") or "")
            generators = kubelet.running("slow-loadgen")
            if started is None and len(generators) == 2:
                started = loop.time()
            if all_ready is None and len(generators) == 2 and all(g.ready for g in generators):
                all_ready = loop.time()
            if (status.get("live") or {}).get("t"):
                first_numbers = loop.time()
            await asyncio.sleep(0.1)
        assert started is not None and all_ready is not None and first_numbers is not None, \
            (reasons[-5:], kubelet.log_tail())
        assert all_ready - started >= 5.0  # the pods were Running, not listening, for the startup delay
        assert "GeneratorUnreachable" not in reasons, sorted(set(reasons))
        assert first_numbers - all_ready < 3.0, (first_numbers - all_ready, sorted(set(reasons)))
        status = status_of(cluster, "lexp", "slow")
        assert status["generators"] == {"expected": 2, "reporting": 2}, dump(status)
