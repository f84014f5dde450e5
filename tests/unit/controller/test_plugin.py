"""kubectl-kinfer without a cluster: argument parsing, the rendered tables, exit codes."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from kinfer import plugin


def console() -> Console:
    return Console(width=160, record=True, force_terminal=False)


def experiment(slo_met: str | None = "True") -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": "Succeeded", "targetRPS": 0.0, "live": {"realRPS": 10.0, "realQPS": 10.0, "p99Ms": 3.5},
        "avg99thMs": 3.2, "serviceRatePercent": 100.0, "sent": 230, "completed": 230, "errors": 0, "dropped": 0,
        "stages": [{"index": 0, "rps": 5, "sent": 15, "completed": 15, "errors": 0, "dropped": 0,
                    "latencyMs": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "p999": 3.0, "max": 3.1},
                    "serviceRate": 1.0}],
        "results": {"configMap": "x-results", "job": "x-loadgen", "path": "/results"},
        "conditions": [],
    }
    if slo_met:
        status["conditions"].append({"type": "SLOMet", "status": slo_met, "reason": "SLOMet",
                                     "message": "p99 3.0 ms <= 1000 ms"})
    return {"metadata": {"name": "x"}, "status": status}


def test_report_prints_stages_verdict_and_results() -> None:
    out = console()
    assert plugin.report(experiment(), out) == 0
    text = out.export_text()
    assert "SLO: MET (SLOMet: p99 3.0 ms <= 1000 ms)" in text
    assert "ConfigMap x-results (summary.json)" in text and "Job x-loadgen" in text
    assert "100.00" in text  # the stage's service rate in percent


def test_report_exits_1_when_the_slo_failed() -> None:
    assert plugin.report(experiment("False"), console()) == 1
    assert plugin.report(experiment(None), console()) == 0


def test_top_table_shows_the_live_numbers() -> None:
    out = console()
    out.print(plugin.top_table(experiment()))
    text = out.export_text()
    assert "phase=Succeeded" in text and "3.5" in text and "sent=230" in text


def test_top_shows_the_targets_resources_beside_the_live_numbers() -> None:
    obj = experiment()
    obj["status"]["live"] |= {"serverCPU": 1.234, "serverMemoryMB": 811.6, "serverGPUUtil": 63.04,
                              "serverGPUMemoryMB": 2048.4}
    out = console()
    out.print(plugin.top_table(obj))
    text = out.export_text()
    for column in ("CPU (cores)", "memory (MB)", "GPU (%)", "GPU memory (MB)"):
        assert column in text
    row = next(line for line in text.splitlines() if "1.23" in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")] == ["1.23", "812", "63.0", "2048"]


def test_top_shows_a_dash_where_the_target_has_no_gpu() -> None:
    obj = experiment()
    obj["status"]["live"] |= {"serverCPU": 0.5, "serverMemoryMB": 300}
    out = console()
    out.print(plugin.server_table(obj["status"]["live"]))
    row = next(line for line in out.export_text().splitlines() if "0.50" in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")] == ["0.50", "300", "-", "-"]


@pytest.mark.parametrize(("raw", "value"), [("30", 30), ("2.5", 2.5), ("schedule", None), ("-", None)])
def test_rps_argument(raw: str, value: float | None) -> None:
    assert plugin.parse_rps(raw) == value


@pytest.mark.parametrize("raw", ["fast", "-3", "inf", "nan"])
def test_bad_rps_is_exit_2(raw: str) -> None:
    with pytest.raises(plugin.PluginError) as info:
        plugin.parse_rps(raw)
    assert info.value.code == 2


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert plugin.main(["frobnicate"]) == 2
    assert plugin.main(["intensity", "only-a-name"]) == 2
    assert "kubectl kinfer" in capsys.readouterr().err


def test_namespace_before_or_after_the_command() -> None:
    parser = plugin.build_parser()
    assert parser.parse_args(["-n", "bench", "report", "x"]).namespace == "bench"
    assert parser.parse_args(["report", "x", "--namespace", "bench"]).namespace == "bench"


def _pod(name: str, phase: str = "Running", ready: bool = True, job: str = "x-loadgen", **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "ownerReferences": [{"kind": "Job", "name": job}], **meta},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": str(ready)}]}}


def test_dashboard_picks_a_running_generator_of_the_experiments_job() -> None:
    assert plugin.running_generator("x", []) is None
    assert plugin.running_generator("x", [_pod("x-loadgen-0-a", phase="Pending"),
                                          _pod("x-loadgen-0-b", phase="Succeeded")]) is None
    assert plugin.running_generator("x", [_pod("y-loadgen-0-a", job="y-loadgen")]) is None  # another job's
    assert plugin.running_generator("x", [_pod("x-loadgen-0-a", deletionTimestamp="2026-01-01T00:00:00Z")]) is None
    pods = [_pod("x-loadgen-1-a", ready=False), _pod("x-loadgen-0-c"), _pod("x-loadgen-0-b")]
    assert plugin.running_generator("x", pods) == "x-loadgen-0-b"  # ready first, then by name
    assert plugin.running_generator("x", [_pod("x-loadgen-1-a", ready=False)]) == "x-loadgen-1-a"


def test_dashboard_url_carries_the_token_in_its_fragment() -> None:
    assert plugin.dashboard_url(8123, "tok") == "http://127.0.0.1:8123/#token=tok"
    assert plugin.FORWARDING.search("Forwarding from 127.0.0.1:41234 -> 8089\n").group(1) == "41234"  # type: ignore[union-attr]


@pytest.mark.parametrize("port", ["http", "-1", "65536"])
def test_dashboard_bad_port_is_exit_2(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert plugin.main(["dashboard", "x", "--port", port]) == 2
    assert "--port" in capsys.readouterr().err


def test_dashboard_says_when_it_shows_one_of_several_generators() -> None:
    assert plugin.share_note({}) is None and plugin.share_note({"parallelism": 1}) is None
    note = plugin.share_note({"parallelism": 3})
    assert note is not None and "one of 3 generators" in note and "kubectl kinfer intensity" in note
