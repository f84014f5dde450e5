"""Fixtures for the generator's app tests: a real target server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.app.loadgen.support import TargetServer


@pytest.fixture
async def target() -> AsyncIterator[TargetServer]:
    server = TargetServer()
    await server.start()
    yield server
    await server.close()
