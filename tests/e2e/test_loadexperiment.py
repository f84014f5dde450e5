"""LoadExperiment end to end: the example (with a short schedule) applied with the real kubectl; the test
plays the kubelet for both pods (the real ``kinfer serve`` with the null backend and the real
``kinfer loadgen``) and the Job controller.

The shortened copy differs from examples/mobilenet.yaml only in ``schedule`` (23 s instead of 11 min),
``windowSize`` and ``arrival: uniform`` — with evenly spaced sends a one-second record measures the rate
exactly, so "30 RPS ± 10 % within 2 s" tests the operator's push, not Poisson noise.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from kinfer.controller.settings import Settings
from kinfer.stored_results import chunk_name, read_chunks
from tests.e2e.operator_harness import (
    Kubelet,
    condition,
    dump,
    install_crds,
    kinfer_operator,
    status_of,
)
from tests.kube.cluster import Cluster, eventually
from tests.kube.kubectl import KUBECTL, columns

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "mobilenet.yaml"
VENV_BIN = Path(sys.executable).parent


def example_docs() -> list[dict[str, Any]]:
    """The example with a short schedule (see the module docstring)."""
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    lexp = next(d for d in docs if d["kind"] == "LoadExperiment")
    lexp["spec"]["schedule"] = [{"rps": 5, "duration": "3s"}, {"rps": 10, "duration": "20s"}]
    lexp["spec"]["windowSize"] = 5
    lexp["spec"]["arrival"] = "uniform"
    return docs


async def plugin(cluster: Cluster, *args: str) -> tuple[int, str, str]:
    """``kubectl kinfer ARGS`` through kubectl's plugin mechanism (kubectl-kinfer found on PATH)."""
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
           "COLUMNS": "160"}
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "kinfer", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


async def generator_status(kubelet: Kubelet) -> dict[str, Any]:
    [gen] = kubelet.running("mobilenet-load-loadgen")
    async with aiohttp.ClientSession() as session, session.get(f"http://{gen.ip}:8089/api/status") as response:
        result: dict[str, Any] = await response.json()
        return result


async def rate_reaches(kubelet: Kubelet, rps: float, within_s: float) -> float:
    """Wait until the generator's last record measured ``rps`` ± 10 %; the time it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    seen = []
    while loop.time() - start < within_s:
        status = await generator_status(kubelet)
        seen.append(status.get("realRPS"))
        if abs((status.get("realRPS") or 0) - rps) <= 0.1 * rps:
            return loop.time() - start
        await asyncio.sleep(0.1)
    raise AssertionError(f"realRPS never reached {rps} ± 10 % within {within_s}s: {seen}")


async def test_experiment_live_status_intensity_restart_and_completion(
    cluster: Cluster, tmp_path: Path, unused_tcp_port: int
) -> None:
    await install_crds(cluster)
    settings = Settings(hostpath_allow=("/home/tank",), metrics_port=unused_tcp_port, metrics_host="127.0.0.1",
                        results_linger_s=20)
    async with Kubelet(cluster, tmp_path) as kubelet:
        async with kinfer_operator(settings):
            _, out, _ = await cluster.kubectl("apply", "--validate=false", "-f", "-",
                                              input=yaml.safe_dump_all(example_docs()))
            assert "loadexperiment.kinfer.dev/mobilenet-load created" in out

            # The Job, once the target is Ready, with the spec's arguments and the schedule as a file.
            job = await cluster.wait_for("jobs", "mobilenet-load-loadgen", timeout_s=30)
            assert job is not None, kubelet.log_tail()
            container = job["spec"]["template"]["spec"]["containers"][0]
            assert container["args"] == [
                "loadgen", "http://mobilenet.default.svc.cluster.local:5000/gpu",
                "--schedule", "/etc/kinfer/schedule.yaml", "--arrival", "uniform", "--seed", "2019",
                "--method", "GET", "--payload", "none", "--protocol", "raw", "--timeout-ms", "10000",
                "--max-in-flight", "2000", "--window", "5", "--interval", "1", "--control-host", "0.0.0.0",
                "--control-port", "8089",
                "--output", "/results", "--linger", "20", "--quiet",
            ]
            assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 343
            schedule = cluster.get("configmaps", "mobilenet-load-schedule")
            assert schedule is not None
            assert yaml.safe_load(schedule["data"]["schedule.yaml"])["stages"][1] == {"duration": "20s", "rps": 10.0}

            # Live status, one record per second, visible in kubectl's printer columns.
            await eventually(lambda: (status_of(cluster, "lexp", "mobilenet-load").get("live") or {}).get("t"),
                             timeout_s=15)
            first = status_of(cluster, "lexp", "mobilenet-load")["live"]["t"]
            await eventually(
                lambda: status_of(cluster, "lexp", "mobilenet-load")["live"]["t"] >= first + 1.0, timeout_s=3)
            _, out, _ = await cluster.kubectl("get", "lexp", "mobilenet-load")
            [row] = columns(out)
            assert row["PHASE"] == "Running"
            for column in ("TARGET", "RPS", "QPS", "P99(MS)", "AVG99TH(MS)", "SR(%)"):
                float(row[column])  # a number, not <none>
            status = status_of(cluster, "lexp", "mobilenet-load")
            assert status["targetURL"] == "http://mobilenet.default.svc.cluster.local:5000/gpu"
            assert status["stage"]["index"] in (0, 1)
            assert condition(status, "Progressing")["reason"] == "Running"

            # kubectl patch → the generator sends 30 RPS within 2 s; the plugin → 20; removing → schedule.
            await cluster.kubectl("patch", "lexp", "mobilenet-load", "--type=merge", "-p", '{"spec":{"intensity":30}}')
            await rate_reaches(kubelet, 30, within_s=2.0)
            await eventually(lambda: status_of(cluster, "lexp", "mobilenet-load").get("targetRPS") == 30, timeout_s=3)
            rc, out, err = await plugin(cluster, "intensity", "mobilenet-load", "20")
            assert rc == 0, err
            await rate_reaches(kubelet, 20, within_s=2.0)
            await cluster.kubectl("patch", "lexp", "mobilenet-load", "--type=json", "-p",
                                  '[{"op":"remove","path":"/spec/intensity"}]')
            await eventually(lambda: generator_status(kubelet), timeout_s=1)
            await eventually(_intensity_is(kubelet, None), timeout_s=3)

            url = f"http://127.0.0.1:{unused_tcp_port}/metrics"
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                metrics = await response.text()
            assert 'kinfer_experiment_target_rps{name="mobilenet-load",namespace="default"}' in metrics
            assert 'kinfer_experiment_p99_ms{name="mobilenet-load",namespace="default"}' in metrics

        # The operator is down for a while in the middle of the run; then it comes back.
        stale = status_of(cluster, "lexp", "mobilenet-load")["live"]["t"]
        await asyncio.sleep(1.5)
        assert status_of(cluster, "lexp", "mobilenet-load")["live"]["t"] == stale
        async with kinfer_operator(settings):
            await eventually(lambda: status_of(cluster, "lexp", "mobilenet-load")["live"]["t"] > stale + 1,
                             timeout_s=5)
            assert [j["metadata"]["name"] for j in cluster.list("jobs", "default")] == ["mobilenet-load-loadgen"]
            assert len(kubelet.started) == 2  # one server, one generator: nothing started twice

            rc, out, _ = await plugin(cluster, "top", "mobilenet-load", "--once")
            assert rc == 0 and "Running" in out and "Avg99th" in out, out

            # Completion: stage table, SLOMet, results.
            await cluster.kubectl("wait", "--for=condition=SLOMet", "--timeout=40s", "lexp/mobilenet-load",
                                  timeout_s=50)
            status = status_of(cluster, "lexp", "mobilenet-load")
            assert status["phase"] == "Succeeded", dump(status)
            assert [s["index"] for s in status["stages"]] == [0, 1]
            for stage in status["stages"]:
                assert stage["sent"] > 0 and stage["serviceRate"] == 1.0 and stage["latencyMs"]["p99"] > 0
            assert condition(status, "SLOMet")["status"] == "True"
            assert status["results"] == {"configMap": "mobilenet-load-results", "job": "mobilenet-load-loadgen",
                                         "path": "/results"}
            results = cluster.get("configmaps", "mobilenet-load-results")
            assert results is not None
            summary = json.loads(results["data"]["summary.json"])
            assert summary["slo"]["met"] is True and summary["sent"] == status["sent"] > 0

            rc, out, err = await plugin(cluster, "report", "mobilenet-load")
            assert rc == 0, err
            assert "SLO: MET" in out and "mobilenet-load-results" in out, out

            # The generator exits after the operator read its final numbers: the Job completes.
            await eventually(lambda: (cluster.get("jobs", "mobilenet-load-loadgen") or {}).get("status", {}).get(
                "succeeded") == 1, timeout_s=10)
            _, out, _ = await cluster.kubectl("get", "lexp", "mobilenet-load")
            assert columns(out)[0]["PHASE"] == "Succeeded"

            # The operator stored every record as the run went, across its own restart (each generator's
            # ``since`` recovered from the stored chunks: no gap, no duplicate), and the full §9 summary.
            stored = read_chunks(stored_chunks(cluster, "mobilenet-load"))
            indices = sorted(stored.records[0])
            assert len(indices) >= 20 and indices == list(range(len(indices))), indices
            summary = json.loads(cluster.get("configmaps", "mobilenet-load-results")["data"]["summary.json"])  # type: ignore[index]
            for key in ("durationS", "achievedRPS", "serviceTimeMs", "sendLagMs", "latencyMs", "stages", "slo"):
                assert summary.get(key) not in (None, {}), (key, summary)
            assert summary["source"] == "generators" and not summary.get("incomplete"), summary
            assert summary["records"] == summary["storedRecords"] == len(indices) and summary["latencyMs"]["p99"] > 0
            # the operator told the generator where the InferenceService's pods serve /metrics
            assert any(r.get("serverCPU") is not None for r in stored.series(0)), stored.series(0)[-1]
            assert summary["server"]["cpu"] is not None and summary["server"]["memoryMB"] > 0, summary["server"]

            # kubectl kinfer report --output: the generator's own results directory, rebuilt from the cluster.
            out_dir = tmp_path / "report"
            rc, out, err = await plugin(cluster, "report", "mobilenet-load", "--output", str(out_dir))
            assert rc == 0, err
            [own] = kubelet.workdir.glob("pods/mobilenet-load-loadgen*/volumes/results")
            assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in own.iterdir())
            ours = (out_dir / "records.csv").read_text().splitlines()
            theirs = (own / "records.csv").read_text().splitlines()
            assert ours[0] == theirs[0] and len(ours) == len(theirs) == len(indices) + 1
            assert json.loads((out_dir / "summary.json").read_text())["sent"] == summary["sent"]
            assert "serverCPU" in ours[0]


def stored_chunks(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    """The experiment's stored record chunks, in order."""
    chunks: list[dict[str, Any]] = []
    while (cm := cluster.get("configmaps", chunk_name(name, len(chunks)))) is not None:
        chunks.append(cm)
    return chunks


def _intensity_is(kubelet: Kubelet, value: float | None) -> Any:
    async def check() -> bool:
        status = await generator_status(kubelet)
        return "intensity" in status and status["intensity"] == value

    return check


async def test_plugin_errors_for_unknown_names(cluster: Cluster) -> None:
    await install_crds(cluster)
    rc, _, err = await plugin(cluster, "report", "nope")
    assert rc == 2 and "nope" in err and "not found" in err, err
    rc, _, err = await plugin(cluster, "intensity", "nope", "30")
    assert rc == 2 and "not found" in err, err
    rc, _, err = await plugin(cluster, "intensity", "nope", "fast")
    assert rc == 2 and "RPS must be a number" in err, err
