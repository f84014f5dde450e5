"""`kinfer run` turns manifests into the right local processes, before starting any of them."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import pytest

from kinfer.api import ManifestError, load_resources, parse_resource
from kinfer.local.plan import build_plan
from kinfer.local.runner import verdict_of

ROOT = Path(__file__).resolve().parents[3]


def _plan(docs: list[dict[str, Any]], dashboard: int | None = 8089) -> Any:
    resources = [parse_resource(d) for d in docs]
    ports = itertools.count(41000)
    return build_plan(resources, ports, lambda name: Path("/r") / name, dashboard, Path("/base"))


def _svc(name: str = "svc", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": {"name": "m", "format": "null", "delayMs": 2}}
    body.update(spec)
    return {"apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": name}, "spec": body}


def _exp(name: str = "exp", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"target": {"service": "svc"}, "schedule": [{"rps": 5, "duration": "3s"}]}
    body.update(spec)
    return {"apiVersion": "kinfer.dev/v1alpha1", "kind": "LoadExperiment", "metadata": {"name": name}, "spec": body}


def _flag(argv: tuple[str, ...] | list[str], flag: str) -> str:
    return argv[list(argv).index(flag) + 1]


def test_one_replica_is_served_directly_and_targeted_by_the_generator() -> None:
    plan = _plan([_svc(workers=2, threads=3), _exp()])
    (server,) = plan.servers
    assert server.replica_ports == (41000,) and server.balancer_port is None
    argv = server.argv[0]
    assert argv[:3] == (sys.executable, "-m", "kinfer.cli") and argv[3] == "serve"
    assert (_flag(argv, "--workers"), _flag(argv, "--threads"), _flag(argv, "--delay-ms")) == ("2", "3", "2")
    assert (_flag(argv, "--host"), _flag(argv, "--port")) == ("127.0.0.1", "41000")
    (exp,) = plan.experiments
    assert exp.url == "http://127.0.0.1:41000" and exp.argv[4] == "http://127.0.0.1:41000/gpu"
    assert exp.control_port == 8089 and _flag(exp.argv, "--control-port") == "8089"
    assert _flag(exp.argv, "--output") == "/r/exp" and _flag(exp.argv, "--schedule") == "/r/exp/schedule.json"
    assert exp.schedule == {"stages": [{"rps": 5.0, "duration": "3s"}], "loop": False}


def test_several_replicas_sit_behind_a_balancer() -> None:
    plan = _plan([_svc(replicas=3), _exp()])
    (server,) = plan.servers
    assert len(server.replica_ports) == 3 and len(set(server.replica_ports)) == 3
    assert server.balancer_port not in server.replica_ports
    assert plan.experiments[0].url == f"http://127.0.0.1:{server.balancer_port}"
    # the generator scrapes every replica's /metrics (not the balancer's one-of-n) for the server's resources
    metrics = [f"http://127.0.0.1:{port}/metrics" for port in server.replica_ports]
    assert _flag(plan.experiments[0].argv, "--server-metrics") == ",".join(metrics)


def test_cluster_only_fields_are_reported_as_ignored_and_gpu_devices_still_pin() -> None:
    kisvc, lexp = load_resources([ROOT / "examples/mobilenet.yaml"])
    plan = build_plan([kisvc, lexp], itertools.count(42000), lambda n: Path("/r") / n, None, Path("/base"))
    (server,) = plan.servers
    assert server.env == {"CUDA_VISIBLE_DEVICES": "0"}
    notes = "\n".join(plan.notes)
    assert "nodeName 'tank-node3'" in notes and "service.nodePort 31500" in notes
    assert "volumes (only model and dataset paths are read from hostPath): code-path, script-path" in notes
    assert _flag(server.argv[0], "--model") == "/home/tank/yanan/model/ssd_mobilenet_v1_coco_2018_01_28.pb"
    assert _flag(server.argv[0], "--memory-fraction") == "0.01"
    assert _flag(server.argv[0], "--known-model") == "ssd-mobilenet"


def test_relative_paths_resolve_against_the_working_directory() -> None:
    plan = _plan([_svc(model={"name": "m", "format": "onnx", "path": "models/m.onnx"}, dataset="data"),
                  _exp(target={"service": "svc", "payload": "dataset:imgs"})])  # fmt: skip
    argv = plan.servers[0].argv[0]
    assert _flag(argv, "--model") == "/base/models/m.onnx" and _flag(argv, "--dataset") == "/base/data"
    assert _flag(plan.experiments[0].argv, "--payload") == "dataset:/base/imgs"


def test_slo_and_seed_reach_the_generator() -> None:
    plan = _plan([_svc(), _exp(seed=3, slo={"p99Ms": 50, "minSuccessRate": 0.95})])
    argv = plan.experiments[0].argv
    assert (_flag(argv, "--seed"), _flag(argv, "--slo-p99-ms"), _flag(argv, "--min-success-rate")) == (
        "3",
        "50",
        "0.95",
    )


def test_url_targets_and_no_dashboard_use_free_ports() -> None:
    plan = _plan([_exp(target={"url": "http://127.0.0.1:9/base"})], dashboard=None)
    assert plan.servers == () and plan.experiments[0].control_port == 41000
    assert plan.experiments[0].argv[4] == "http://127.0.0.1:9/base/gpu"
    assert "--server-metrics" not in plan.experiments[0].argv  # a server kinfer run did not start


def test_capacity_mode_passes_the_search_to_the_generator() -> None:
    capacity = {"minRPS": 5, "maxRPS": 400, "probeDuration": "2s", "precision": 0.1}
    docs = [_svc(), _exp(mode="capacity", schedule=[], capacity=capacity, slo={"p99Ms": 50, "minSuccessRate": 0.99})]
    argv = _plan(docs).experiments[0].argv
    assert _flag(argv, "--mode") == "capacity" and "--schedule" not in argv
    assert [_flag(argv, f) for f in ("--min-rps", "--max-rps", "--probe-duration", "--precision")] == [
        "5", "400", "2s", "0.1"
    ]
    assert (_flag(argv, "--slo-p99-ms"), _flag(argv, "--min-success-rate")) == ("50", "0.99")
    defaults = _plan([_svc(), _exp(mode="capacity", slo={"p99Ms": 50})]).experiments[0].argv
    assert [_flag(defaults, f) for f in ("--min-rps", "--max-rps", "--probe-duration", "--precision")] == [
        "1", "1000", "10s", "0.05"
    ]


def test_a_capacity_run_is_judged_by_whether_a_capacity_was_found() -> None:
    exp = _plan([_svc(), _exp(mode="capacity", slo={"p99Ms": 50})]).experiments[0]
    probes = [{"rps": 1, "p99Ms": 80.0, "serviceRate": 1.0, "message": "p99 80.0 ms > 50 ms"}]
    none = verdict_of(exp, {"sent": 9, "completed": 9, "capacity": {"rps": None, "p99Ms": None, "probes": probes}})
    assert none is not None and not none.met and "p99 80.0 ms > 50 ms" in none.message
    # the whole search's p99 (over failing probes too) does not decide: the capacity does
    found = {"sent": 9, "completed": 9, "latencyMs": {"p99": 900.0}, "capacity": {"rps": 40, "p99Ms": 31.5}}
    verdict = verdict_of(exp, found)
    assert verdict is not None and verdict.met and verdict.message == "capacity 40 rps at p99 31.5 ms"


@pytest.mark.parametrize(
    ("docs", "needle"),
    [
        ([_exp()], "spec.target.service 'svc' is not an InferenceService in the given files"),
        ([_svc(), _svc()], "InferenceService svc: defined twice"),
        ([_svc(replicas=0)], "spec.replicas is 0"),
    ],
)
def test_unusable_references_are_bad_input(docs: list[dict[str, Any]], needle: str) -> None:
    with pytest.raises(ManifestError, match=needle):
        _plan(docs)


def test_container_paths_under_a_volume_are_read_from_its_host_path() -> None:
    svc = _svc(
        model={"name": "m", "format": "onnx", "path": "/model/m.onnx"},
        dataset="/data/images",
        volumes=[
            {"name": "model", "hostPath": "/srv/models", "mountPath": "/model"},
            {"name": "code", "hostPath": "/srv/code", "mountPath": "/code"},
        ],
    )
    plan = _plan([svc])
    argv = plan.servers[0].argv[0]
    assert _flag(argv, "--model") == "/srv/models/m.onnx"  # through the volume
    assert _flag(argv, "--dataset") == "/data/images"  # no volume: as written
    assert any("volumes (only model and dataset paths are read from hostPath): code" in n for n in plan.notes)
