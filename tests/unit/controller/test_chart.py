"""The Helm chart's static parts, without a cluster: they parse and its settings exist in the operator
(templates are flattened, not rendered). Its RBAC is checked against what the operator really calls on
the real control plane: tests/cluster/test_rbac.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

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
    for crd in ("inferenceservices", "loadexperiments", "sweeps"):
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


def test_sweep_timeouts_default_to_the_operator_s_own() -> None:
    from kinfer.controller.settings import Settings

    values = yaml.safe_load((CHART / "values.yaml").read_text())["sweep"]
    assert values["readyTimeoutSeconds"] == Settings().sweep_ready_timeout_s
    assert values["teardownTimeoutSeconds"] == Settings().sweep_teardown_timeout_s
