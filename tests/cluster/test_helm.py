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
        for crd in ("inferenceservices.kinfer.dev", "loadexperiments.kinfer.dev"):
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
