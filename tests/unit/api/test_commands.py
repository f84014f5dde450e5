"""The ``kinfer serve`` command line built from an InferenceService is one the server accepts, field by field."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from kinfer.api import InferenceService, parse_resource
from kinfer.api.commands import serve_args
from kinfer.api.inferenceservice import Layout, Preprocess
from kinfer.server.cli import parse_config
from kinfer.server.modelspec import LAYOUTS
from kinfer.server.preprocess import PREPROCESSORS


def _isvc(**model: Any) -> InferenceService:
    resource = parse_resource(
        {
            "apiVersion": "kinfer.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "m"},
            "spec": {"model": {"name": "custom", "format": "onnx", "path": "/models/m.onnx", **model}},
        }
    )
    assert isinstance(resource, InferenceService)
    return resource


def test_the_api_offers_exactly_the_servers_preprocessing_and_layouts() -> None:
    assert set(get_args(Preprocess)) == set(PREPROCESSORS)
    assert set(get_args(Layout)) == set(LAYOUTS)


@pytest.mark.parametrize("preprocess", get_args(Preprocess))
@pytest.mark.parametrize("layout", get_args(Layout))
def test_model_fields_reach_the_server_as_flags_it_parses(preprocess: str, layout: str) -> None:
    args = serve_args(_isvc(preprocess=preprocess, layout=layout, inputSize=[32, 48]), "0.0.0.0", 5000)
    assert args[0] == "serve"
    config, _ = parse_config(args[1:], environ={})
    assert (config.preprocess, config.layout, config.input_size) == (preprocess, layout, (32, 48))


def test_layout_is_left_to_the_model_when_unset() -> None:
    args = serve_args(_isvc(), "0.0.0.0", 5000)
    assert "--layout" not in args
    assert parse_config(args[1:], environ={})[0].layout is None
