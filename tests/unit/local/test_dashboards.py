"""The overview page's rows: each experiment's dashboard link and live numbers, or "unreachable"."""

from __future__ import annotations

from kinfer.local.dashboards import Listed, row


def test_a_row_has_the_dashboard_link_and_the_live_numbers() -> None:
    snapshot = {"phase": "Running", "mode": "open", "targetRPS": 30.0, "realRPS": 29.0, "realQPS": 29.0,
                "p99Ms": 4.5, "avg99thMs": 4.0, "serviceRate": 1.0, "sent": 300, "errors": 0, "dropped": 0,
                "serverCPU": 0.4, "serverMemoryMB": 120.0, "serverGPUUtil": None, "stage": {"index": 1},
                "stages": [{"index": 0}], "latencyMs": {"p99": 9.0}}  # fmt: skip
    out = row(Listed("exp-b", "http://127.0.0.1:8090"), snapshot)
    assert out["dashboard"] == "http://127.0.0.1:8090/" and out["name"] == "exp-b"
    assert (out["phase"], out["stage"], out["realRPS"], out["serverCPU"], out["serverGPUUtil"]) == (
        "Running", 1, 29.0, 0.4, None)
    assert "stages" not in out and "latencyMs" not in out  # only the row's numbers travel


def test_a_generator_that_does_not_answer_is_unreachable() -> None:
    assert row(Listed("exp-a", "http://127.0.0.1:8089/"), None) == {
        "name": "exp-a", "dashboard": "http://127.0.0.1:8089/", "phase": "unreachable"}
