"""Fixtures for the server's unit tests: Flask test clients over the null backend, test images."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from kinfer.server.app import create_app, runtime_of
from kinfer.server.config import ServerConfig, resolve

MakeApp = Callable[..., Flask]


def image_bytes(width: int = 64, height: int = 48, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    """A small deterministic image encoded as ``fmt``."""
    rng = np.random.default_rng(width * 1000 + height)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    img = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def make_app() -> Iterator[MakeApp]:
    """Build apps over the null backend (loaded synchronously unless ``background``)."""
    apps: list[Flask] = []

    def make(background: bool = False, backend_factory: object = None, **overrides: object) -> Flask:
        config = ServerConfig(**{"format": "null", **overrides})
        spec, dataset = resolve(config)
        app = create_app(config, spec, dataset, backend_factory=backend_factory, background=background)
        apps.append(app)
        return app

    yield make
    for app in apps:
        runtime_of(app).close()
        runtime_of(app).metrics.stop_sampling()


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
