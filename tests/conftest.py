"""Root test configuration: every test is marked with its tier (unit, app, e2e, cluster, images) from its directory.

``pytest -m unit`` runs the fast tier alone; ``make test`` runs them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TIERS = ("unit", "app", "e2e", "cluster", "images")
ROOT = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.path)).relative_to(ROOT).parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def control_plane() -> Iterator[Any]:
    """``make kube-up``'s control plane with the chart installed by Helm (tests/cluster/live.py), for the
    cluster tier and the operator image; stopped at the end if this session started it."""
    from tests.cluster.live import ControlPlane

    plane = ControlPlane.up()
    plane.install_chart()
    try:
        yield plane
    finally:
        if plane.started_here:
            plane.down()
