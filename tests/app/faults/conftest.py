"""Fault tests drive a real ``kinfer serve`` with the real generator: both tiers' fixtures."""

from __future__ import annotations

from tests.app.loadgen.conftest import start_run
from tests.app.server.conftest import serve

__all__ = ["serve", "start_run"]
