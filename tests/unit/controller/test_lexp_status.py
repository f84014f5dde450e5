"""Generator snapshots → status: one pod passes through, several merge; SLO verdict and summary."""

from __future__ import annotations

from typing import Any

from kinfer.api import LoadExperimentStatus
from kinfer.api.loadexperiment import SLO
from kinfer.controller import lexp_status as merge


def snapshot(rps: float, p99: float, sent: int, completed: int, phase: str = "Running") -> dict[str, Any]:
    live = {"index": 4, "t": 5.0, "targetRPS": rps, "realRPS": rps, "realQPS": rps, "errors": 0, "dropped": 0,
            "p50Ms": p99 / 2, "p99Ms": p99, "maxMs": p99 + 1, "avgRPS": rps, "avgQPS": rps, "serviceRate": 1.0,
            "avg99thMs": p99, "inFlight": 1, "errorsByClass": {}}
    return {
        "phase": phase, "startedAt": "2026-01-01T00:00:00Z", "stage": {"index": 1, "rps": rps, "endsAt": "x"},
        "targetRPS": rps, "intensity": None, "live": live, **{k: v for k, v in live.items() if k != "index"},
        "totals": {"sent": sent, "completed": completed, "errors": sent - completed, "dropped": 0},
        "sent": sent, "completed": completed,
        "stages": [{"index": 0, "rps": rps, "ramp": False, "durationS": 3.0, "sent": sent, "completed": completed,
                    "errors": sent - completed, "dropped": 0,
                    "latencyMs": {"p50": 1.0, "p90": 2.0, "p99": p99, "p999": p99, "max": p99, "mean": 1.0},
                    "serviceRate": completed / sent}],
    }


def test_live_status_of_one_generator_is_schema_valid() -> None:
    status = merge.live_status(snapshot(10, 4.0, 100, 100))
    assert status["live"] == {"t": 5.0, "targetRPS": 10, "realRPS": 10, "realQPS": 10, "errors": 0, "dropped": 0,
                              "p50Ms": 2.0, "p99Ms": 4.0, "maxMs": 5.0, "avgRPS": 10, "avgQPS": 10,
                              "serviceRate": 1.0, "avg99thMs": 4.0}
    assert status["serviceRatePercent"] == 100.0 and status["sent"] == 100
    assert status["stage"] == {"index": 1, "rps": 10, "endsAt": "x"}
    LoadExperimentStatus.model_validate(status)  # every field is declared


def test_several_generators_add_up_and_report_the_worst_latency() -> None:
    merged = merge.merge([snapshot(10, 4.0, 100, 100), snapshot(10, 9.0, 100, 90, phase="Succeeded")])
    assert merged["phase"] == "Running"
    assert (merged["realRPS"], merged["targetRPS"], merged["p99Ms"]) == (20, 20, 9.0)
    assert merged["totals"] == {"sent": 200, "completed": 190, "errors": 10, "dropped": 0}
    assert merged["stages"] == [{"index": 0, "rps": 20, "durationS": 3.0, "sent": 200, "completed": 190,
                                 "errors": 10, "dropped": 0,
                                 "latencyMs": {"p50": 1.0, "p90": 2.0, "p99": 9.0, "p999": 9.0, "max": 9.0,
                                               "mean": 1.0},
                                 "serviceRate": 0.95}]
    assert merged["stage"]["rps"] == 20 and merged["live"]["realRPS"] == 20
    assert merge.merged_phase(["Succeeded", "Succeeded"]) == "Succeeded"
    assert merge.merged_phase(["Succeeded", "Stopped"]) == "Stopped"
    assert merge.merged_phase(["Running", "Failed"]) == "Failed"
    assert merge.merged_phase([]) is None


def test_verdict_and_summary() -> None:
    done = snapshot(10, 40.0, 100, 100, phase="Succeeded")
    assert merge.verdict(SLO(p99_ms=50, min_success_rate=0.99), done).met
    failed = merge.verdict(SLO(p99_ms=30), done)
    assert (failed.met, failed.reason) == (False, "SLOViolated") and "p99 40.0 ms > 30 ms" in failed.message
    summary = merge.summary(done, SLO(p99_ms=50), "http://x/gpu")
    assert summary["slo"] == {"p99Ms": 50, "minSuccessRate": None, "met": True, "successRate": 1.0,
                              "message": "p99 40.0 ms <= 50 ms; success rate 100.00% (100 of 100 offered)"}
    assert summary["sent"] == 100 and summary["latencyMs"] == {"p99": 40.0} and len(summary["stages"]) == 1
    assert merge.whole_run_p99({"latencyMs": {"p99": 3.0}, "stages": []}) == 3.0


def test_closed_loop_clients_and_throughput_add_up_across_generators() -> None:
    pods = [{"phase": "Running", "concurrency": 4, "stage": {"index": 0, "concurrency": 4},
             "stages": [{"index": 0, "concurrency": 4, "sent": 100, "completed": 100, "requestsPerS": 50.0,
                         "imagesPerS": 200.0}]} for _ in range(2)]
    merged = merge.merge(pods)
    assert merged["concurrency"] == 8 and merged["stage"]["concurrency"] == 8
    [stage] = merged["stages"]
    assert (stage["concurrency"], stage["requestsPerS"], stage["imagesPerS"]) == (8, 100.0, 400.0)
    status = merge.live_status(merged)
    assert status["concurrency"] == 8 and status["stage"] == {"index": 0, "concurrency": 8}


def test_the_targets_resources_reach_the_live_status_and_are_not_added_up_across_generators() -> None:
    pods = []
    for cpu in (1.5, 1.7):
        pod = snapshot(10, 4.0, 100, 100)
        server = {"serverCPU": cpu, "serverMemoryMB": 812.0, "serverGPUUtil": None, "serverGPUMemoryMB": None}
        pod["live"] |= server
        pods.append(pod | server)
    status = merge.live_status(pods[0])
    assert (status["live"]["serverCPU"], status["live"]["serverMemoryMB"]) == (1.5, 812.0)
    assert "serverGPUUtil" not in status["live"]  # no GPU: empty, not zero
    LoadExperimentStatus.model_validate(status)
    merged = merge.live_status(merge.merge(pods))
    assert (merged["live"]["serverCPU"], merged["live"]["serverMemoryMB"]) == (1.7, 812.0)
    assert merged["live"]["realRPS"] == 20  # the rates still add up
    gpu = {"serverGPUUtil": 63.0, "serverGPUMemoryMB": 2048.0}
    with_gpu = merge.live_status(pods[0] | {"live": pods[0]["live"] | gpu})
    dumped = LoadExperimentStatus.model_validate(with_gpu).wire()
    assert (dumped["live"]["serverGPUUtil"], dumped["live"]["serverGPUMemoryMB"]) == (63.0, 2048.0)


def test_each_stages_server_resources_are_kept_once_across_generators_and_declared() -> None:
    pods = [snapshot(10, 4.0, 100, 100), snapshot(10, 4.0, 100, 100)]
    pods[0]["stages"][0]["server"] = {"cpu": 0.8, "memoryMB": 300.0, "gpuUtil": None}
    pods[1]["stages"][0]["server"] = {"cpu": 0.9, "memoryMB": 290.0, "gpuUtil": None}
    merged = merge.merge(pods)
    assert merged["stages"][0]["server"] == {"cpu": 0.9, "memoryMB": 300.0}  # taken once, GPU empty not zero
    status = LoadExperimentStatus.model_validate({"stages": merged["stages"]}).wire()
    assert status["stages"][0]["server"] == {"cpu": 0.9, "memoryMB": 300.0}  # declared, so kept by the apiserver
    unmeasured = merge.merge([snapshot(10, 4.0, 100, 100)])
    assert "server" not in unmeasured["stages"][0]
