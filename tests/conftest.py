"""Root test configuration: every test is marked with its tier (unit, app, e2e, cluster, images) from its directory.

``pytest -m unit`` runs the fast tier alone; ``make test`` runs them all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TIERS = ("unit", "app", "e2e", "cluster", "images")
ROOT = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.path)).relative_to(ROOT).parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))
