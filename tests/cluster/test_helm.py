"""The chart with the real Helm: it lints, renders, and ``helm uninstall`` keeps the CRDs and every
user's resources (deleting a CRD would delete all objects of its kind); installing again adopts them."""

from __future__ import annotations

import yaml

from tests.cluster.live import OPERATOR_NAMESPACE, RELEASE, ROOT, ControlPlane, LiveCluster
from tests.cluster.test_inferenceservice import null_service


def test_the_chart_lints_clean(control_plane: ControlPlane) -> None:
    out = control_plane.helm("lint", str(ROOT / "charts" / "kinfer"), "--strict")
    assert "0 chart(s) failed" in out, out


async def test_uninstall_keeps_the_crds_and_the_users_resources(
    control_plane: ControlPlane, live: LiveCluster
) -> None:
    await live.kubectl("apply", "-f", "-", input=yaml.safe_dump(null_service("survivor")))
    control_plane.helm("uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--wait")
    try:
        for crd in ("inferenceservices.kinfer.dev", "loadexperiments.kinfer.dev", "sweeps.kinfer.dev"):
            rc, _, err = await live.kubectl("get", "crd", crd, check=False)
            assert rc == 0, err
        assert live.get("inferenceservices", "survivor") is not None
        rc, _, _ = await live.kubectl("get", "clusterrole", RELEASE, check=False)
        assert rc != 0  # the rest of the release is gone
    finally:
        control_plane.install_chart()
    assert live.get("inferenceservices", "survivor") is not None
    _, out, _ = await live.kubectl("get", "crd", "inferenceservices.kinfer.dev", "-o", "yaml")
    assert yaml.safe_load(out)["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_monitoring_objects_render_with_the_dashboard_and_validate_on_the_server(control_plane: ControlPlane) -> None:
    """ServiceMonitor, PodMonitors and the dashboard ConfigMap (off by default) render with Helm; the
    ConfigMap is accepted by the API server (dry run) and carries the dashboard file unchanged."""
    import json
    import subprocess

    from tests.cluster.live import KUBECTL

    rendered = control_plane.helm("template", RELEASE, str(ROOT / "charts" / "kinfer"), "-n", OPERATOR_NAMESPACE,
                                  "--set", "monitoring.serviceMonitor.enabled=true",
                                  "--set", "monitoring.podMonitors.enabled=true",
                                  "--set", "monitoring.grafanaDashboard.enabled=true",
                                  "--set", "monitoring.podMonitors.scraperNamespace=monitoring")
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] in ("ServiceMonitor", "PodMonitor"))
    assert kinds == [("PodMonitor", "kinfer-load-generator"), ("PodMonitor", "kinfer-model-server"),
                     ("ServiceMonitor", "kinfer")]
    [dashboard] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kinfer-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = ROOT / "charts" / "kinfer" / "dashboards" / "kinfer.json"
    assert json.loads(dashboard["data"]["kinfer.json"]) == json.loads(board.read_text())
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KINFER_OPERATOR_SCRAPER_NAMESPACE"] == "monitoring"
    check = subprocess.run([KUBECTL, "apply", "--dry-run=server", "-f", "-"], input=yaml.safe_dump(dashboard),
                           capture_output=True, text=True, env=control_plane.env(), timeout=60)
    assert check.returncode == 0, check.stderr
