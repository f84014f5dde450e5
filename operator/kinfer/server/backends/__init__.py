"""Inference backends: small plug-ins, each importing its framework only inside its own module.

A backend loads one model in one worker process and runs batches on it. ``REGISTRY`` maps the
``--format`` names to dotted paths so that ``kinfer serve --format null`` never imports TensorFlow.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from kinfer.server.backends.base import Backend, BackendOptions, TensorInfo
from kinfer.server.modelspec import ModelSpec

#: ``--format`` -> ``module:class``.
REGISTRY: dict[str, str] = {
    "null": "kinfer.server.backends.null:NullBackend",
    "tf-graphdef": "kinfer.server.backends.tensorflow:GraphDefBackend",
    "tf-savedmodel": "kinfer.server.backends.tensorflow:SavedModelBackend",
    "onnx": "kinfer.server.backends.onnxruntime:OnnxRuntimeBackend",
}

__all__ = ["REGISTRY", "Backend", "BackendOptions", "BackendRef", "TensorInfo", "create_backend"]


@dataclass(frozen=True)
class BackendRef:
    """A registry entry resolved to its module and class name."""

    module: str
    cls: str


def _ref(fmt: str) -> BackendRef:
    try:
        module, cls = REGISTRY[fmt].split(":")
    except KeyError:
        raise ValueError(f"unknown model format {fmt!r} (one of {', '.join(REGISTRY)})") from None
    return BackendRef(module, cls)


def create_backend(spec: ModelSpec, options: BackendOptions) -> Backend:
    """Instantiate (without loading) the backend for ``spec.format``, importing its module now."""
    ref = _ref(spec.format)
    cls = getattr(importlib.import_module(ref.module), ref.cls)
    backend: Backend = cls(spec, options)
    return backend
