"""LoadExperiment builders: target resolution, the schedule ConfigMap (rates split by parallelism), the
full generator Job (validated against Kubernetes 1.32), Job completion and the results ConfigMap."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kinfer.api import LoadExperiment, ManifestError, parse_resource
from kinfer.controller import lexp_build as build
from kinfer.controller.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = Settings()
LABELS = {
    "app.kubernetes.io/name": "kinfer-loadgen",
    "app.kubernetes.io/instance": "mobilenet-load",
    "app.kubernetes.io/component": "load-generator",
    "app.kubernetes.io/part-of": "kinfer",
    "app.kubernetes.io/managed-by": "kinfer-operator",
    "kinfer.dev/experiment": "mobilenet-load",
}
OWNER = {
    "apiVersion": "kinfer.dev/v1alpha1",
    "kind": "LoadExperiment",
    "name": "mobilenet-load",
    "uid": "u-9",
    "controller": True,
    "blockOwnerDeletion": True,
}
URL = "http://mobilenet.default.svc.cluster.local:5000/gpu"


def example_doc() -> dict[str, Any]:
    doc = next(
        d for d in yaml.safe_load_all((ROOT / "examples/mobilenet.yaml").read_text()) if d["kind"] == "LoadExperiment"
    )
    doc["metadata"].update(namespace="default", uid="u-9", generation=1)
    return doc


def lexp_of(doc: dict[str, Any]) -> LoadExperiment:
    resource = parse_resource(doc)
    assert isinstance(resource, LoadExperiment)
    return resource


def valid(manifest: dict[str, Any]) -> dict[str, Any]:
    kubernetes_validate.validate(manifest, "1.32", strict=True)
    return manifest


def test_example_job() -> None:
    job = valid(build.build_job(lexp_of(example_doc()), URL, SETTINGS))
    assert job == example_job({"name": "results", "emptyDir": {}})


def test_results_volume_claim_is_mounted_at_the_results_dir() -> None:
    doc = example_doc()
    doc["spec"]["results"] = {"volumeClaim": "bench-results"}
    job = valid(build.build_job(lexp_of(doc), URL, SETTINGS))
    assert job == example_job({"name": "results", "persistentVolumeClaim": {"claimName": "bench-results"}})


def test_a_results_volume_claim_must_be_a_claim_name() -> None:
    doc = example_doc()
    doc["spec"]["results"] = {"volumeClaim": "Not_A_Name"}
    with pytest.raises(ManifestError, match="volumeClaim"):
        lexp_of(doc)


def example_job(results_volume: dict[str, Any]) -> dict[str, Any]:
    """The Job built from examples/mobilenet.yaml, with its results volume."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "mobilenet-load-loadgen",
            "namespace": "default",
            "labels": LABELS,
            "ownerReferences": [OWNER],
        },
        "spec": {
            "parallelism": 1,
            "completions": 1,
            "completionMode": "Indexed",
            "backoffLimit": 0,  # 11 minutes: a rerun would mix two runs
            "activeDeadlineSeconds": 660 + 300 + 30,
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "loadgen",
                            "image": "kinfer/loadgen:0.1.0",
                            "command": ["kinfer"],
                            "args": [
                                "loadgen",
                                URL,
                                "--schedule",
                                "/etc/kinfer/schedule.yaml",
                                "--arrival",
                                "poisson",
                                "--seed",
                                "2019",
                                "--method",
                                "GET",
                                "--payload",
                                "none",
                                "--protocol",
                                "raw",
                                "--timeout-ms",
                                "10000",
                                "--max-in-flight",
                                "2000",
                                "--window",
                                "60",
                                "--interval",
                                "1",
                                "--control-host",
                                "0.0.0.0",
                                "--control-port",
                                "8089",
                                "--output",
                                "/results",
                                "--linger",
                                "30",
                                "--quiet",
                            ],
                            "env": [
                                {"name": "PYTHONUNBUFFERED", "value": "1"},
                                {
                                    "name": "KINFER_LOADGEN_CONTROL_TOKEN",
                                    "valueFrom": {
                                        "secretKeyRef": {"name": "mobilenet-load-control", "key": "token"}
                                    },
                                },
                            ],
                            "ports": [{"name": "control", "containerPort": 8089, "protocol": "TCP"}],
                            "readinessProbe": {
                                "httpGet": {"path": "/api/status", "port": "control"},
                                "periodSeconds": 2,
                                "timeoutSeconds": 1,
                            },
                            "volumeMounts": [
                                {"name": "schedule", "mountPath": "/etc/kinfer", "readOnly": True},
                                {"name": "results", "mountPath": "/results"},
                            ],
                            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                        }
                    ],
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "automountServiceAccountToken": False,
                    "volumes": [
                        {"name": "schedule", "configMap": {"name": "mobilenet-load-schedule"}},
                        results_volume,
                    ],
                },
            },
        },
    }


def test_schedule_configmap_holds_the_stages() -> None:
    cm = valid(build.build_schedule_configmap(lexp_of(example_doc())))
    assert cm["metadata"] == {
        "name": "mobilenet-load-schedule",
        "namespace": "default",
        "labels": LABELS,
        "ownerReferences": [OWNER],
    }
    schedule = yaml.safe_load(cm["data"]["schedule.yaml"])
    assert schedule["loop"] is False
    assert [s["rps"] for s in schedule["stages"]] == [1, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert {s["duration"] for s in schedule["stages"]} == {"60s"}


def test_parallel_generators_split_rates_and_in_flight_and_drop_the_shared_seed() -> None:
    doc = example_doc()
    doc["spec"].update(
        parallelism=4,
        schedule=[{"rps": 100, "duration": "30s"}, {"rampTo": 10, "duration": "1m"}],
        maxInFlight=1001,
        loop=True,
        nodeSelector={"role": "loadgen"},
        resources={"limits": {"cpu": "1"}},
        image="mine:2",
    )
    lexp = lexp_of(doc)
    assert build.schedule_document(lexp) == {
        "stages": [{"duration": "30s", "rps": 25.0}, {"duration": "1m", "rampTo": 2.5}],
        "loop": True,
    }
    job = valid(build.build_job(lexp, "http://10.0.0.3:31500/gpu", SETTINGS))
    spec = job["spec"]
    assert (spec["parallelism"], spec["completions"], spec["backoffLimit"]) == (4, 4, 0)
    assert "activeDeadlineSeconds" not in spec  # a looping schedule runs until stopped
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert "--seed" not in container["args"]
    assert container["args"][container["args"].index("--max-in-flight") + 1] == "251"
    assert container["image"] == "mine:2" and container["resources"] == {"limits": {"cpu": "1"}}
    assert pod["nodeSelector"] == {"role": "loadgen"}


def test_a_generator_is_never_rerun() -> None:
    # A rerun would start the schedule again and mix two runs in one result: a dead generator fails it.
    doc = example_doc()
    doc["spec"]["schedule"] = [{"rps": 5, "duration": "10s"}]
    job = build.build_job(lexp_of(doc), URL, Settings(results_linger_s=5))
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 10 + 300 + 5


def test_target_resolution() -> None:
    lexp = lexp_of(example_doc())
    assert build.resolve_target(lexp, None) == build.Target(
        None, "TargetNotFound", "InferenceService 'mobilenet' does not exist"
    )
    pending = {"status": {"phase": "Degraded", "serviceURL": "http://x:5000"}}
    assert build.resolve_target(lexp, pending) == build.Target(
        None, "TargetNotReady", "InferenceService 'mobilenet' is Degraded"
    )
    ready = {"status": {"phase": "Ready", "serviceURL": "http://mobilenet.default.svc.cluster.local:5000/"}}
    assert build.resolve_target(lexp, ready) == build.Target(URL)
    doc = example_doc()
    doc["spec"]["target"] = {"url": "http://10.0.0.3:31500/", "path": "/v2/models/m/infer", "method": "POST"}
    assert build.resolve_target(lexp_of(doc), None) == build.Target("http://10.0.0.3:31500/v2/models/m/infer")


def test_job_finished() -> None:
    assert build.job_finished(None) is None
    job: dict[str, Any] = {"spec": {"completions": 2, "backoffLimit": 0}, "status": {"succeeded": 1}}
    assert build.job_finished(job) is None
    job["status"]["succeeded"] = 2
    assert build.job_finished(job) == "Complete"
    assert build.job_finished({"spec": {"backoffLimit": 0}, "status": {"failed": 1}}) == "Failed"
    assert (
        build.job_finished(
            {"spec": {}, "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}
        )
        == "Failed"
    )


def test_results_configmap() -> None:
    cm = valid(build.build_results_configmap(lexp_of(example_doc()), {"sent": 3, "slo": {"met": True}}))
    assert cm["metadata"]["name"] == "mobilenet-load-results"
    assert json.loads(cm["data"]["summary.json"]) == {"sent": 3, "slo": {"met": True}}


def test_capacity_mode_hands_the_search_and_its_slo_to_the_generator() -> None:
    doc = example_doc()
    doc["spec"].update(mode="capacity", schedule=[],
                       capacity={"minRPS": 5, "maxRPS": 80, "probeDuration": "5s", "precision": 0.1})  # fmt: skip
    job = valid(build.build_job(lexp_of(doc), URL, Settings(results_linger_s=5)))
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--schedule" not in args
    flags = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}
    assert {k: flags[k] for k in ("--mode", "--min-rps", "--max-rps", "--probe-duration", "--precision",
                                  "--slo-p99-ms", "--min-success-rate")} == {
        "--mode": "capacity", "--min-rps": "5", "--max-rps": "80", "--probe-duration": "5s", "--precision": "0.1",
        "--slo-p99-ms": "1000", "--min-success-rate": "0.99"}  # fmt: skip
    # The deadline covers the longest search: 5 doublings 5->80 + 5 bisections to 10 %, each probe a
    # warm-up window and at most 10 windows of 5/3 s (+ 1 s slack each, 2 s per probe); no retry (a search
    # that finds no capacity exits 1 by design).
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == math.ceil((5 + 5) * (5 / 3 + 10 * (5 / 3 + 1) + 2) + 300 + 5)


def test_capacity_mode_with_several_generators_is_refused_naming_the_field() -> None:
    doc = example_doc()
    doc["spec"].update(mode="capacity", parallelism=2)
    with pytest.raises(ManifestError, match="parallelism must be 1"):
        parse_resource(doc)


def test_a_closed_loop_splits_its_clients_and_requests_between_pods_and_passes_its_flags() -> None:
    doc = example_doc()
    doc["spec"].update(schedule=[{"concurrency": 4, "duration": "10s"}, {"concurrency": 8, "duration": "10s"}],
                       parallelism=2, thinkTime="50ms", requests=1001)  # fmt: skip
    doc["spec"]["target"].update(protocol="v2", method="POST", payload="dataset:/data", batchSize=4)
    lexp = lexp_of(doc)
    assert build.schedule_document(lexp)["stages"] == [
        {"duration": "10s", "concurrency": 2}, {"duration": "10s", "concurrency": 4}]  # fmt: skip
    args = build.build_job(lexp, URL, Settings(results_linger_s=5))["spec"]["template"]["spec"]["containers"][0]["args"]
    flags = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}
    assert (flags["--think-time"], flags["--requests"], flags["--batch-size"]) == ("0.05", "501", "4")


def test_network_policy_admits_only_the_operator_to_the_control_port() -> None:
    policy = valid(build.build_network_policy(lexp_of(example_doc()), "kinfer-system"))
    assert policy == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "mobilenet-load-control", "namespace": "default", "labels": LABELS,
                     "ownerReferences": [OWNER]},
        "spec": {
            "podSelector": {"matchLabels": LABELS},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kinfer-system"}},
                          "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kinfer-operator"}}}],
                "ports": [{"protocol": "TCP", "port": 8089}],
            }],
        },
    }
    # The chart's operator pods carry the label the policy admits.
    chart = (Path(__file__).resolve().parents[3] / "charts" / "kinfer" / "templates" / "_helpers.tpl").read_text()
    assert "app.kubernetes.io/name: kinfer-operator" in chart.split('define "kinfer.selectorLabels"')[1]


def test_a_scraper_namespace_is_admitted_beside_the_operator() -> None:
    policy = valid(build.build_network_policy(lexp_of(example_doc()), "kinfer-system", "monitoring"))
    peers = policy["spec"]["ingress"][0]["from"]
    assert peers[1] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    assert len(peers) == 2 and policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8089}]
