"""Pure builders for a LoadExperiment: target URL, schedule ConfigMap, generator Job, results ConfigMap.

The schedule travels as a ConfigMap mounted as a file (``kinfer loadgen --schedule``), with each
stage's rate already divided by ``parallelism`` so that every generator pod sends its share.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from kinfer.api import LoadExperiment, commands
from kinfer.api.commands import GeneratorPlacement
from kinfer.controller.meta import (
    EXPERIMENT_LABEL,
    container_security_context,
    owner_reference,
    pod_security_context,
    standard_labels,
)
from kinfer.controller.settings import Settings

CONTAINER = "loadgen"
COMPONENT = "load-generator"
SCHEDULE_DIR = "/etc/kinfer"
SCHEDULE_FILE = "schedule.yaml"
RESULTS_DIR = "/results"
#: Slack on top of the schedule for image pull, start-up, drain and the final read of the results.
DEADLINE_SLACK_S = 300
#: Key of the control token in the experiment's Secret, and the generator's variable that reads it.
TOKEN_KEY = "token"
TOKEN_ENV = "KINFER_LOADGEN_CONTROL_TOKEN"


def job_name(name: str) -> str:
    """The experiment's one generator Job (deterministic: a restarted operator finds it)."""
    return f"{name}-loadgen"


def schedule_name(name: str) -> str:
    """ConfigMap holding the schedule file."""
    return f"{name}-schedule"


def results_name(name: str) -> str:
    """ConfigMap the operator copies the summary into."""
    return f"{name}-results"


def control_secret_name(name: str) -> str:
    """Secret with the token of the generators' control API (only the operator and the pods read it)."""
    return f"{name}-control"


def labels(lexp: LoadExperiment) -> dict[str, str]:
    """Labels of everything an experiment owns (the generator pods are selected by them)."""
    return {**standard_labels("kinfer-loadgen", lexp.name, COMPONENT), EXPERIMENT_LABEL: lexp.name}


def _meta(lexp: LoadExperiment, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": lexp.namespace,
        "labels": labels(lexp),
        "ownerReferences": [owner_reference("LoadExperiment", lexp.name, lexp.metadata.uid or "")],
    }


# --- target -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The resolved base URL (``None`` while waiting) and why not yet."""

    url: str | None
    reason: str = ""
    message: str = ""


def resolve_target(lexp: LoadExperiment, isvc: Mapping[str, Any] | None) -> Target:
    """``spec.target.url`` + path, or the named InferenceService's ``status.serviceURL`` once it is Ready."""
    target = lexp.spec.target
    if target.url is not None:
        return Target(target.url.rstrip("/") + target.path)
    if isvc is None:
        return Target(None, "TargetNotFound", f"InferenceService {target.service!r} does not exist")
    status = isvc.get("status") or {}
    if status.get("phase") != "Ready" or not status.get("serviceURL"):
        phase = status.get("phase") or "Pending"
        return Target(None, "TargetNotReady", f"InferenceService {target.service!r} is {phase}")
    return Target(str(status["serviceURL"]).rstrip("/") + target.path)


# --- schedule -----------------------------------------------------------------------------------


def share(value: float, parallelism: int) -> float:
    """One generator pod's part of a rate."""
    return round(value / parallelism, 6)


def schedule_document(lexp: LoadExperiment) -> dict[str, Any]:
    """The schedule file of one generator pod: the spec's stages with rates split by parallelism."""
    n = lexp.spec.parallelism
    stages = []
    for stage in lexp.spec.schedule:
        out: dict[str, Any] = {"duration": stage.duration}
        if stage.concurrency is not None:
            out["concurrency"] = stage.concurrency // n  # a multiple of parallelism (validated)
        elif stage.rps is not None:
            out["rps"] = share(stage.rps, n)
        else:
            out["rampTo"] = share(stage.end_rps, n)
        stages.append(out)
    return {"stages": stages, "loop": lexp.spec.loop}


def build_schedule_configmap(lexp: LoadExperiment) -> dict[str, Any]:
    """ConfigMap ``<name>-schedule`` with ``schedule.yaml``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(lexp, schedule_name(lexp.name)),
        "data": {SCHEDULE_FILE: yaml.safe_dump(schedule_document(lexp), sort_keys=False)},
    }


# --- control token ------------------------------------------------------------------------------


def build_control_secret(lexp: LoadExperiment, token: str) -> dict[str, Any]:
    """Secret ``<name>-control``: the bearer token every state-changing control call must carry."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(lexp, control_secret_name(lexp.name)),
        "stringData": {TOKEN_KEY: token},
    }


def secret_token(secret: Mapping[str, Any]) -> str | None:
    """The token of a Secret as the API returns it (base64 ``data``), or ``None``."""
    raw = (secret.get("data") or {}).get(TOKEN_KEY)
    if raw is None:
        return (secret.get("stringData") or {}).get(TOKEN_KEY)
    try:
        return base64.b64decode(raw, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


# --- network policy ------------------------------------------------------------------------------

#: Labels of the operator's pods (the chart's selector labels).
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "kinfer-operator"}


def network_policy_name(name: str) -> str:
    """NetworkPolicy guarding the generators' control port."""
    return f"{name}-control"


def build_network_policy(
    lexp: LoadExperiment, operator_namespace: str, scraper_namespace: str | None = None
) -> dict[str, Any]:
    """Only the operator's pods may reach the generator pods (their control port is the only one they
    listen on), and a Prometheus of ``scraper_namespace`` when one scrapes them; where the network plugin
    enforces policies, nothing else in the cluster can change a run even with the token."""
    peers: list[dict[str, Any]] = [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": operator_namespace}},
            "podSelector": {"matchLabels": dict(OPERATOR_POD_LABELS)},
        }
    ]
    if scraper_namespace:
        peers.append({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": scraper_namespace}}})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(lexp, network_policy_name(lexp.name)),
        "spec": {
            "podSelector": {"matchLabels": labels(lexp)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": lexp.spec.control_port}]}],
        },
    }


# --- job ----------------------------------------------------------------------------------------


def loadgen_args(lexp: LoadExperiment, url: str, settings: Settings) -> list[str]:
    """``kinfer loadgen`` arguments (DESIGN §9) for one generator pod."""
    where = GeneratorPlacement(
        schedule_file=f"{SCHEDULE_DIR}/{SCHEDULE_FILE}",
        output=RESULTS_DIR,
        control_port=lexp.spec.control_port,
        linger_s=settings.results_linger_s,
        control_host="0.0.0.0",  # the operator reaches it at the pod IP; the token guards it
        share=lexp.spec.parallelism,
        judge=False,
    )
    return commands.loadgen_args(lexp, url, where)


def backoff_limit(lexp: LoadExperiment) -> int:
    """Never rerun a generator: a rerun would start the schedule again and mix two runs in one result (and
    a capacity search that found no capacity exits 1 by design). A generator that dies fails the run,
    with the numbers read up to its last record."""
    return 0


def active_deadline(lexp: LoadExperiment, settings: Settings) -> int | None:
    """Schedule length (× attempts) plus slack and linger; ``None`` for looping schedules."""
    if lexp.spec.loop:
        return None
    attempts = backoff_limit(lexp) + 1
    once = lexp.spec.duration_s + DEADLINE_SLACK_S + settings.results_linger_s
    return math.ceil(once * attempts)


def results_volume(lexp: LoadExperiment) -> dict[str, Any]:
    """The generator's results directory: the user's PersistentVolumeClaim (``spec.results.volumeClaim``)
    or an emptyDir (the operator keeps its own copy of the results either way)."""
    claim = lexp.spec.results.volume_claim if lexp.spec.results is not None else None
    if claim:
        return {"name": "results", "persistentVolumeClaim": {"claimName": claim}}
    return {"name": "results", "emptyDir": {}}


def build_job(lexp: LoadExperiment, url: str, settings: Settings) -> dict[str, Any]:
    """The generator Job ``<name>-loadgen``: ``parallelism`` pods, each sending its share."""
    spec = lexp.spec
    image = spec.image if "image" in spec.model_fields_set else settings.loadgen_image
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "command": ["kinfer"],
        "args": loadgen_args(lexp, url, settings),
        "env": [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {
                "name": TOKEN_ENV,
                "valueFrom": {"secretKeyRef": {"name": control_secret_name(lexp.name), "key": TOKEN_KEY}},
            },
        ],
        "ports": [{"name": "control", "containerPort": spec.control_port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/api/status", "port": "control"},
            "periodSeconds": 2,
            "timeoutSeconds": 1,
        },
        "volumeMounts": [
            {"name": "schedule", "mountPath": SCHEDULE_DIR, "readOnly": True},
            {"name": "results", "mountPath": RESULTS_DIR},
        ],
        "securityContext": container_security_context(),
    }
    if spec.resources is not None:
        resources = {
            part: {k: str(v) for k, v in amounts.wire().items()}
            for part in ("requests", "limits")
            if (amounts := getattr(spec.resources, part)) is not None and amounts.wire()
        }
        if resources:
            container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "securityContext": pod_security_context(),
        "automountServiceAccountToken": False,  # the generator never calls the API
        "volumes": [
            {"name": "schedule", "configMap": {"name": schedule_name(lexp.name)}},
            results_volume(lexp),
        ],
    }
    if spec.node_name:
        pod_spec["nodeName"] = spec.node_name
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    job_spec: dict[str, Any] = {
        "parallelism": spec.parallelism,
        "completions": spec.parallelism,
        "completionMode": "Indexed",
        "backoffLimit": backoff_limit(lexp),
        "template": {"metadata": {"labels": labels(lexp)}, "spec": pod_spec},
    }
    deadline = active_deadline(lexp, settings)
    if deadline is not None:
        job_spec["activeDeadlineSeconds"] = deadline
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(lexp, job_name(lexp.name)),
        "spec": job_spec,
    }


def job_finished(job: Mapping[str, Any] | None) -> str | None:
    """``Complete`` or ``Failed`` once the Job has finished (its conditions or counts), else ``None``."""
    if not job:
        return None
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            return str(cond["type"])
    completions = (job.get("spec") or {}).get("completions") or 1
    if (status.get("succeeded") or 0) >= completions:
        return "Complete"
    limit = (job.get("spec") or {}).get("backoffLimit", 6)
    if (status.get("failed") or 0) > limit:
        return "Failed"
    return None


def build_records_configmap(
    lexp: LoadExperiment, name: str, data: Mapping[str, str | None], binary: Mapping[str, str]
) -> dict[str, Any]:
    """A ConfigMap of stored records (``<name>-results-<k>``, layout in :mod:`kinfer.stored_results`)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(lexp, name),
        "data": {k: v for k, v in data.items() if v is not None},
        "binaryData": dict(binary),
    }


def build_results_configmap(lexp: LoadExperiment, summary: Mapping[str, Any]) -> dict[str, Any]:
    """ConfigMap ``<name>-results`` with ``summary.json`` (DESIGN §9; the records are in
    ``<name>-results-<k>``)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(lexp, results_name(lexp.name)),
        "data": {"summary.json": json.dumps(summary, indent=2, sort_keys=True)},
    }
