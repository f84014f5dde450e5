"""The chart's RBAC is derived, not guessed: the operator, running clusterwide as the chart's
ServiceAccount, goes through every path that calls the API (create, scale, change, complete, patch the
rate, stop, run a Sweep, delete), and the API server's audit log of that ServiceAccount's requests must equal what
the chart's roles grant, plus two things derived from the code rather than seen in one run: ``update``
on ``*/finalizers``, which owner references with ``blockOwnerDeletion`` need (checked at admission, not
recorded as a request), and ``get`` on each kind it creates, which ``ensure()`` reads back after a 409. Then the
operator runs with one verb taken away and reports it as a Failed condition quoting the API server."""

from __future__ import annotations

import datetime
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.live import (
    HELM,
    OPERATOR_NAMESPACE,
    RELEASE,
    ROOT,
    ControlPlane,
    LiveCluster,
    OperatorProcess,
    audit_events,
    running_operator,
)
from tests.e2e.operator_harness import Kubelet, condition, dump, status_of
from tests.kube.cluster import eventually

Grant = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


def chart_grants(plane: ControlPlane, release: str, *values: str) -> set[Grant]:
    """What the chart's (Cluster)Roles grant, rendered by Helm with these values."""
    rendered = subprocess.run([HELM, "template", release, str(ROOT / "charts" / "kinfer"), "-n", OPERATOR_NAMESPACE,
                               *(f"--set={v}" for v in values)],
                              capture_output=True, text=True, check=True, env=plane.env()).stdout
    grants: set[Grant] = set()
    for doc in yaml.safe_load_all(rendered):
        if doc and doc["kind"] in ("ClusterRole", "Role"):
            for rule in doc["rules"]:
                grants.update((g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"])
    return grants


def used_grants(plane: ControlPlane, user: str, since: str) -> set[Grant]:
    """(apiGroup, resource, verb) of every request the ServiceAccount ``user`` made since ``since``."""
    used: set[Grant] = set()
    for event in audit_events(plane, user, since):
        ref = event.get("objectRef")
        if not ref:  # discovery (/api, /apis): granted to every authenticated user
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        used.add((ref.get("apiGroup", ""), resource, event["verb"]))
    return used


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


SERVER: dict[str, Any] = {
    "apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "rbac-target"},
    "spec": {"model": {"name": "null", "format": "null"}, "replicas": 2, "service": {"type": "ClusterIP"}}}
EXPERIMENT: dict[str, Any] = {
    "apiVersion": "kinfer.dev/v1alpha1", "kind": "LoadExperiment", "metadata": {"name": "rbac-load"},
    "spec": {"target": {"service": "rbac-target"}, "arrival": "uniform", "windowSize": 2,
             "schedule": [{"rps": 10, "duration": "5s"}], "slo": {"p99Ms": 1000}}}
SWEEP: dict[str, Any] = {
    "apiVersion": "kinfer.dev/v1alpha1", "kind": "Sweep", "metadata": {"name": "rbac-sweep"},
    "spec": {"service": {"model": {"name": "null", "format": "null"}, "service": {"type": "ClusterIP"}},
             "experiment": {"arrival": "uniform", "windowSize": 2, "schedule": [{"rps": 5, "duration": "2s"}]},
             "matrix": [{"path": "service.threads", "values": [1]}]}}


@pytest.mark.parametrize("mode", ["clusterwide", "one-namespace"])
async def test_the_chart_grants_exactly_what_the_operator_uses(
    control_plane: ControlPlane, live: LiveCluster, kubelet: Kubelet, operator: OperatorProcess, tmp_path: Path,
    mode: str,
) -> None:
    # The chart's two shapes: ClusterRoles for every namespace (the default), or a Role in the one
    # namespace it watches (a second release beside the first, without the CRDs).
    release, values = RELEASE, ["replicas=0"]
    if mode == "one-namespace":
        release, values = "kinfer-ns", ["replicas=0", "installCRDs=false", f"watchNamespace={live.namespace}"]
        control_plane.install_chart(*values[1:], release=release)
        operator.kubeconfig = control_plane.service_account_kubeconfig(tmp_path / "ns.kubeconfig", release)
        operator.clusterwide = False
        operator.env["KINFER_OPERATOR_LEASE_NAME"] = release
    live.delete("leases", release, OPERATOR_NAMESPACE)  # so that the run takes it from scratch (create)
    user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{release}"
    since = now()
    try:
        await exercise_every_api_path(live, operator)
    finally:
        if mode == "one-namespace":
            control_plane.helm("uninstall", release, "-n", OPERATOR_NAMESPACE, "--wait")

    used = used_grants(control_plane, user, since)
    granted = chart_grants(control_plane, release, *values)
    finalizers = {("kinfer.dev", f"{kind}/finalizers", "update")
                  for kind in ("inferenceservices", "loadexperiments", "sweeps")}
    # Kube.ensure() reads an object back when its create answers 409 (after a restart between two creates)
    # to check who controls it: every kind the operator creates that way needs get, even in a run with no
    # restart (Events are posted by kopf, not ensured).
    readback = {(group, resource, "get") for group, resource, verb in used if verb == "create" and resource != "events"}
    assert used, f"no audit events of {user}"
    assert not used - granted, f"used but not granted: {sorted(used - granted)}"
    assert granted == used | finalizers | readback, (
        f"granted but never used: {sorted(granted - used - finalizers - readback)}\nused: {json.dumps(sorted(used))}")


async def stop_before_start(live: LiveCluster, name: str) -> dict[str, Any]:
    """An experiment whose generator can never be scheduled, stopped: it ends Stopped and its Job is
    suspended (its pending pod removed); its status."""
    pending = {**EXPERIMENT, "metadata": {"name": name},
               "spec": {**EXPERIMENT["spec"], "target": {"url": "http://127.0.0.1:9/"},
                        "nodeSelector": {"kinfer.dev/no-such-node": "true"}}}
    await live.kubectl("apply", "-f", "-", input=yaml.safe_dump(pending))
    await eventually(lambda: live.list("pods", label_selector=f"kinfer.dev/experiment={name}"), timeout_s=30)
    await live.kubectl("patch", "lexp", name, "--type=merge", "-p", '{"spec":{"stop":true}}')
    await eventually(lambda: status_of(live, "lexp", name).get("phase") == "Stopped", timeout_s=30)
    await eventually(lambda: (live.get("jobs", f"{name}-loadgen") or {}).get("spec", {}).get("suspend") is True
                     and not live.list("pods", label_selector=f"kinfer.dev/experiment={name}"), timeout_s=30)
    return status_of(live, "lexp", name)


async def exercise_every_api_path(live: LiveCluster, operator: OperatorProcess) -> None:
    """Create, scale, change, complete, re-rate and delete: every path of the operator that calls the API."""
    async with running_operator(operator):
        await live.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([SERVER, EXPERIMENT]))
        await live.kubectl("wait", "--for=condition=Ready", "kisvc/rbac-target", "--timeout=60s", timeout_s=70)
        await eventually(lambda: status_of(live, "lexp", "rbac-load").get("phase") == "Running", timeout_s=30)
        await live.kubectl("patch", "lexp", "rbac-load", "--type=merge", "-p", '{"spec":{"intensity":12}}')
        # A changed Service type and one replica less: the Service is patched, a pod deleted.
        await live.kubectl("patch", "kisvc", "rbac-target", "--type=merge", "-p",
                           '{"spec":{"replicas":1,"service":{"type":"NodePort"}}}')
        await eventually(lambda: (live.get("services", "rbac-target") or {})["spec"]["type"] == "NodePort"
                         and len(live.list("pods", label_selector="kinfer.dev/service=rbac-target")) == 1,
                         timeout_s=30)
        await live.kubectl("wait", "--for=condition=SLOMet", "--timeout=60s", "lexp/rbac-load", timeout_s=70)
        await stop_before_start(live, "rbac-pending")
        # A Sweep of one point: it creates the point's InferenceService and LoadExperiment, and deletes the
        # InferenceService when the point is done.
        await live.kubectl("apply", "-f", "-", input=yaml.safe_dump(SWEEP))
        await eventually(lambda: status_of(live, "sweep", "rbac-sweep").get("phase") == "Succeeded", timeout_s=90)
        await live.kubectl("delete", "sweep", "rbac-sweep", "--timeout=60s", timeout_s=70)
        await live.kubectl("delete", "lexp", "rbac-load", "--timeout=60s", timeout_s=70)
        await live.kubectl("delete", "kisvc", "rbac-target", "--timeout=60s", timeout_s=70)
        await eventually(lambda: not live.list("pods"), timeout_s=60)


async def test_a_verb_taken_away_is_a_failed_condition_quoting_the_api_server(
    control_plane: ControlPlane, live: LiveCluster, kubelet: Kubelet, operator: OperatorProcess, tmp_path: Path
) -> None:
    # The chart's roles for a second ServiceAccount, without `create` on Jobs.
    account = "kinfer-no-jobs"
    live.create("serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}},
                namespace=OPERATOR_NAMESPACE)
    for role in ("kinfer", "kinfer-cluster"):
        rules = json.loads((await live.kubectl("get", "clusterrole", role, "-o", "json")).stdout)["rules"]
        for rule in rules:
            if rule["resources"] == ["jobs"]:
                rule["verbs"] = [v for v in rule["verbs"] if v != "create"]
        name = f"{role}-{live.namespace}"
        await live.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
             "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
             "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": OPERATOR_NAMESPACE}]},
        ]))
    try:
        operator.kubeconfig = control_plane.service_account_kubeconfig(tmp_path / "limited.kubeconfig", account)
        operator.env["KINFER_OPERATOR_LEASE_NAMESPACE"] = ""  # one process: no election (no Lease Role here)
        experiment = {**EXPERIMENT, "spec": {**EXPERIMENT["spec"], "target": {"url": "http://127.0.0.1:9/"}}}
        async with running_operator(operator):
            await live.kubectl("apply", "-f", "-", input=yaml.safe_dump(experiment))
            await eventually(lambda: status_of(live, "lexp", "rbac-load").get("phase") == "Failed", timeout_s=30)
        progressing = condition(status_of(live, "lexp", "rbac-load"), "Progressing")
        assert progressing["reason"] == "APIRefused403", dump(progressing)
        assert 'cannot create resource "jobs" in API group "batch"' in progressing["message"], dump(progressing)
        assert f"system:serviceaccount:{OPERATOR_NAMESPACE}:{account}" in progressing["message"]
        assert not live.list("jobs")
    finally:
        for role in ("kinfer", "kinfer-cluster"):
            await live.kubectl("delete", "clusterrole,clusterrolebinding", f"{role}-{live.namespace}", check=False)
        live.delete("serviceaccounts", account, OPERATOR_NAMESPACE)
