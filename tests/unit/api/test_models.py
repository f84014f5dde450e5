"""The API models read specs the way DESIGN.md §3 names them, and refuse bad ones naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from kinfer.api import LoadExperiment, ManifestError, parse_resource
from kinfer.api.common import wire_name
from kinfer.api.durations import format_duration, parse_duration
from kinfer.api.schedule import Schedule, rate_at


def _lexp(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "target": {"url": "http://127.0.0.1:5000"},
        "schedule": [{"rps": 5, "duration": "10s"}],
    }
    body.update(spec)
    return {
        "apiVersion": "kinfer.dev/v1alpha1",
        "kind": "LoadExperiment",
        "metadata": {"name": "x"},
        "spec": body,
    }


def _kisvc(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": {"name": "m", "format": "null"}}
    body.update(spec)
    return {
        "apiVersion": "kinfer.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "m"},
        "spec": body,
    }


@pytest.mark.parametrize(
    ("field", "wire"),
    [
        ("target_rps", "targetRPS"),
        ("avg99th_ms", "avg99thMs"),
        ("service_url", "serviceURL"),
        ("pod_ip", "podIP"),
        ("max_in_flight", "maxInFlight"),
        ("real_qps", "realQPS"),
    ],
)
def test_wire_names_keep_the_designs_acronyms(field: str, wire: str) -> None:
    assert wire_name(field) == wire


def test_load_experiment_defaults_follow_the_design() -> None:
    lexp = parse_resource(_lexp())
    assert isinstance(lexp, LoadExperiment)
    spec = lexp.spec
    assert (spec.arrival, spec.window_size, spec.record_interval_s, spec.mode) == (
        "poisson",
        60,
        1.0,
        "schedule",
    )
    assert (spec.target.path, spec.target.method, spec.target.protocol) == ("/gpu", "GET", "raw")
    assert spec.intensity is None and spec.stop is False and spec.control_port == 8089


def test_status_serialises_with_design_field_names() -> None:
    wire = LoadExperiment.model_validate(
        {
            **_lexp(),
            "status": {"targetRPS": 30, "live": {"t": 3, "realRPS": 29, "p99Ms": 4.5}, "avg99thMs": 4},
        }
    ).status
    assert wire is not None
    assert wire.wire() == {
        "targetRPS": 30.0,
        "live": {"t": 3.0, "realRPS": 29.0, "realQPS": 0.0, "errors": 0, "dropped": 0, "p99Ms": 4.5},
        "avg99thMs": 4.0,
    }


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (_kisvc(workers=0), "spec.workers: Input should be greater than or equal to 1"),
        (_kisvc(service={"type": "NodePort", "nodePort": 80}), "spec.service.nodePort"),
        (_kisvc(model={"name": "m", "format": "onnx"}), "model.path is required"),
        (_kisvc(gpu={"devices": "0", "count": 1}), "exclusive"),
        (_kisvc(gpu={"devices": "gpu0"}), "spec.gpu.devices"),
        (_kisvc(replica=2), "spec.replica: Extra inputs are not permitted"),
        (_lexp(schedule=[{"rps": -1, "duration": "1s"}]), "spec.schedule[0].rps"),
        (_lexp(schedule=[{"rps": 1, "rampTo": 3, "duration": "1s"}]),
         "exactly one of 'rps', 'rampTo' or 'concurrency'"),
        (_lexp(schedule=[{"concurrency": 4, "duration": "1s"}, {"rps": 3, "duration": "1s"}]),
         "schedule[1].rps: a schedule is all-rate or all-concurrency"),
        (_lexp(schedule=[{"rps": 3, "duration": "1s"}], thinkTime="1s"), "thinkTime needs a closed-loop schedule"),
        (_lexp(schedule=[{"concurrency": 3, "duration": "1s"}], parallelism=2),
         "schedule[0].concurrency 3 must be a multiple of parallelism 2"),
        (_lexp(target={"url": "http://x", "batchSize": 4}), "target.batchSize > 1 needs protocol v2"),
        (_lexp(requests=0), "spec.requests"),
        (_lexp(schedule=[{"rps": 1, "duration": "soon"}]), "spec.schedule[0].duration"),
        (_lexp(schedule=[]), "schedule needs at least one stage"),
        (_lexp(target={"service": "a", "url": "http://b"}), "exactly one of 'service' or 'url'"),
        (_lexp(target={"url": "ftp://b"}), "spec.target.url"),
        (_lexp(arrival="gaussian"), "spec.arrival"),
        (_lexp(mode="capacity"), "needs an slo"),
        (_lexp(recordInterval="0s"), "recordInterval must be > 0"),
    ],
)
def test_invalid_specs_are_refused_naming_the_field(doc: dict[str, Any], needle: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_resource(doc, "f.yaml")
    assert str(err.value).startswith(f"f.yaml: {doc['kind']} {doc['metadata']['name']}: ")
    assert needle in str(err.value)


def test_unknown_kind_and_wrong_api_version_are_refused() -> None:
    with pytest.raises(ManifestError, match="unsupported kind 'Pod'"):
        parse_resource({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})
    with pytest.raises(ManifestError, match=r"apiVersion must be 'kinfer\.dev/v1alpha1'"):
        parse_resource({**_kisvc(), "apiVersion": "kinfer.dev/v1"})


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("30s", 30), ("2m", 120), ("1h30m", 5400), ("10", 10), (2.5, 2.5)]
)
def test_durations_parse_kubernetes_strings_and_seconds(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1d", "-5", "5 s", "ms", "nan"])
def test_bad_durations_name_the_value(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for seconds in (0.25, 1, 59, 90, 3600, 5430):
        assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_schedule_rates_hold_ramp_and_loop() -> None:
    sched = Schedule.from_data(
        {"stages": [{"rps": 10, "duration": "10s"}, {"rampTo": 30, "duration": "10s"}], "loop": True}
    )
    assert rate_at(sched.stages, 5) == (0, 10)
    assert rate_at(sched.stages, 15) == (1, pytest.approx(20))
    assert rate_at(sched.stages, 25, loop=True) == (0, 10)
    assert rate_at(sched.stages, 25) == (-1, 0.0)
    assert sched.duration_s == 20


def test_a_bare_list_is_a_schedule() -> None:
    assert Schedule.from_data([{"rps": 1, "duration": "1s"}]).loop is False


def test_slo_verdicts_name_what_failed() -> None:
    from kinfer.api.loadexperiment import SLO
    from kinfer.api.slo import evaluate

    slo = SLO(p99_ms=100, min_success_rate=0.99)
    assert evaluate(None, 500, 10, 1).met
    ok = evaluate(slo, 80, 1000, 995)
    assert ok.met and ok.reason == "SLOMet"
    slow = evaluate(slo, 120, 1000, 1000)
    assert not slow.met and "p99 120.0 ms > 100 ms" in slow.message
    lossy = evaluate(slo, 50, 1000, 900)
    assert not lossy.met and "success rate 90.00% < 99.00%" in lossy.message
    assert not evaluate(slo, None, 0, 0).met
    dropping = evaluate(slo, 50, 900, 900, dropped=100)
    assert not dropping.met and "success rate 90.00%" in dropping.message


def test_record_columns_are_the_designs() -> None:
    from kinfer.api.loadexperiment import RECORD_COLUMNS

    assert RECORD_COLUMNS == ("t", "targetRPS", "realRPS", "realQPS", "errors", "dropped", "p50Ms", "p99Ms", "maxMs",
                              "avgRPS", "avgQPS", "serviceRate", "avg99thMs", "concurrency", "imagesPerS",
                              "serverCPU", "serverMemoryMB", "serverGPUUtil", "serverGPUMemoryMB")  # fmt: skip
