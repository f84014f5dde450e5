"""The Helm chart without helm: its static parts parse, its settings exist in the operator, and its RBAC
grants exactly what the operator calls (no helm binary here; templates are flattened, not rendered)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from kinfer.controller import kube
from kinfer.controller.settings import KNOWN, PREFIX

CHART = Path(__file__).resolve().parents[3] / "charts" / "kinfer"


def flatten(path: Path) -> list[dict[str, Any]]:
    """A template's documents with control lines dropped and every ``{{ expr }}`` replaced by ``x``."""
    lines = [line for line in path.read_text().splitlines() if not line.strip().startswith("{{-")]
    text = re.sub(r"\{\{.*?\}\}", "x", "\n".join(lines))
    return [d for d in yaml.safe_load_all(text) if d]


def test_chart_and_values() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["apiVersion"], chart["name"], chart["type"]) == ("v2", "kinfer", "application")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["installCRDs"] is True
    assert values["image"]["repository"] == "kinfer/operator"
    assert values["hostPathAllow"] == [] and values["watchNamespace"] == ""
    for crd in ("inferenceservices", "loadexperiments"):
        text = (CHART / "templates" / "crds" / f"{crd}.yaml").read_text()
        assert "{{- if .Values.installCRDs }}" in text


def test_deployment_runs_kinfer_operator_with_known_settings() -> None:
    [deployment] = flatten(CHART / "templates" / "deployment.yaml")
    assert deployment["kind"] == "Deployment" and deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    [container] = pod["containers"]
    names = [e["name"] for e in container["env"]]
    assert names and all(n.startswith(PREFIX) and n.removeprefix(PREFIX) in KNOWN for n in names), names
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    [service] = flatten(CHART / "templates" / "service.yaml")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


# (apiGroup, resource) -> verbs: what the operator's code does, and why.
NEEDED = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},  # kopf's scanning
    ("", "namespaces"): {"get", "list", "watch"},  # kopf's namespace scanning
    ("kinfer.dev", "inferenceservices"): {"get", "list", "watch", "patch"},  # watch; finalizer/annotations
    ("kinfer.dev", "loadexperiments"): {"get", "list", "watch", "patch"},
    ("kinfer.dev", "inferenceservices/status"): {"get", "patch"},  # Kube.patch_status
    ("kinfer.dev", "loadexperiments/status"): {"get", "patch"},
    ("", "pods"): {"get", "list", "watch", "create", "delete"},  # on.event(pods), ensure, delete
    ("", "services"): {"get", "create", "patch", "delete"},  # ensure, patch on spec change, delete
    ("", "configmaps"): {"get", "create", "patch", "delete"},  # schedule + results (replace_data)
    ("", "secrets"): {"get", "create", "delete"},  # the generators' control token
    ("batch", "jobs"): {"get", "create", "delete"},  # ensure (create-if-absent), delete
    ("kinfer.dev", "inferenceservices/finalizers"): {"update"},  # blockOwnerDeletion on owned objects
    ("kinfer.dev", "loadexperiments/finalizers"): {"update"},
    ("", "events"): {"create"},  # kopf.info / kopf.warn
}


def test_rbac_grants_exactly_what_the_operator_needs() -> None:
    granted: dict[tuple[str, str], set[str]] = {}
    roles = [d for d in flatten(CHART / "templates" / "rbac.yaml") if "rules" in d]
    assert len(roles) == 2
    for role in roles:
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == NEEDED


def test_every_kind_the_api_client_knows_is_granted() -> None:
    for kind in kube.KINDS.values():
        group = "" if kind.prefix == "/api/v1" else kind.prefix.split("/")[2]
        assert (group, kind.plural) in NEEDED, kind


def test_default_images_are_the_tags_make_images_builds() -> None:
    """values.yaml (image.repository + appVersion, serverImage, loadgenImage) and the operator's built-in
    defaults name kinfer/<name>:<pyproject version>, the tags of `make images` (tests/images checks those)."""
    import tomllib

    from kinfer.controller.settings import Settings, from_env

    version = tomllib.loads((CHART.parents[1] / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == version
    operator = f"{values['image']['repository']}:{values['image']['tag'] or chart['appVersion']}"
    assert operator == f"kinfer/operator:{version}"
    for settings in (Settings(), from_env({})):
        assert values["serverImage"] == settings.server_image == f"kinfer/model-server:{version}"
        assert values["loadgenImage"] == settings.loadgen_image == f"kinfer/loadgen:{version}"
