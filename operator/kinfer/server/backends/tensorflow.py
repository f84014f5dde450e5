"""TensorFlow backends: MLPerf's frozen-graph path (``tf.compat.v1``) and SavedModel.

TensorFlow is imported here only, and only in ``load`` (in the worker, after fork). Frozen graphs are
fed in the graph's own input dtype (MLPerf's loader fed float32 first, which breaks uint8 graphs).
With a GPU and ``memory_fraction`` each process caps its memory the TF2 way (a logical device with a
memory limit computed from the device's total) and, for the v1 session, with the seed's
``per_process_gpu_memory_fraction``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from kinfer.server import gpu
from kinfer.server.backends.base import Backend, Batch, Outputs, TensorInfo

log = logging.getLogger(__name__)


def _configure_gpus(tf: Any, fraction: float | None) -> None:
    """Cap (or let grow) GPU memory before the first op; a no-op on CPU-only machines."""
    devices = tf.config.list_physical_devices("GPU")
    if not devices:
        return
    totals = {g.index: g.total_bytes for g in gpu.visible_gpus()}
    for i, device in enumerate(devices):
        try:
            if fraction is not None and i in totals:
                limit_mb = int(totals[i] * fraction / 2**20)
                tf.config.set_logical_device_configuration(
                    device, [tf.config.LogicalDeviceConfiguration(memory_limit=limit_mb)]
                )
                log.info("GPU %d: memory capped at %d MiB (fraction %.3f)", i, limit_mb, fraction)
            else:
                tf.config.experimental.set_memory_growth(device, True)
        except RuntimeError as exc:  # devices already initialised in this process
            log.warning("GPU %d: memory settings not applied: %s", i, exc)


def _shape(tensor_shape: Any) -> tuple[int, ...]:
    dims = tensor_shape.as_list() if tensor_shape.rank is not None else []
    return tuple(-1 if d is None else int(d) for d in dims)


class GraphDefBackend(Backend):
    """A frozen TF1 GraphDef run in a ``tf.compat.v1.Session`` (thread-safe ``run``)."""

    def load(self) -> None:
        import tensorflow as tf

        _configure_gpus(tf, self.options.memory_fraction)
        assert self.spec.path is not None
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(Path(self.spec.path).read_bytes())
        graph = tf.Graph()
        with graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        config = tf.compat.v1.ConfigProto()
        if self.options.memory_fraction is not None:
            config.gpu_options.per_process_gpu_memory_fraction = self.options.memory_fraction
        else:
            config.gpu_options.allow_growth = True
        if self.options.intra_op_threads:
            config.intra_op_parallelism_threads = self.options.intra_op_threads
        self._session = tf.compat.v1.Session(graph=graph, config=config)
        inp = graph.get_tensor_by_name(self.spec.inputs[0])
        self.input = TensorInfo(inp.name, np.dtype(inp.dtype.as_numpy_dtype).name, _shape(inp.shape))
        fetched = [graph.get_tensor_by_name(name) for name in self.spec.outputs]
        self.outputs = [TensorInfo(t.name, np.dtype(t.dtype.as_numpy_dtype).name, _shape(t.shape)) for t in fetched]
        self._input_tensor = inp
        self._fetches = fetched

    def predict(self, batch: Batch) -> Outputs:
        values = self._session.run(self._fetches, feed_dict={self._input_tensor: batch})
        return {t.name: np.asarray(v) for t, v in zip(self.outputs, values, strict=True)}


def _plain(name: str) -> str:
    return name.split(":")[0]


class SavedModelBackend(Backend):
    """A SavedModel's ``serving_default`` signature; outputs keyed by the spec's names where they match."""

    def load(self) -> None:
        import tensorflow as tf

        _configure_gpus(tf, self.options.memory_fraction)
        assert self.spec.path is not None
        self._model = tf.saved_model.load(self.spec.path)
        self._fn = self._model.signatures["serving_default"]
        _, kwargs = self._fn.structured_input_signature
        wanted = _plain(self.spec.inputs[0]) if self.spec.inputs else ""
        key: str = wanted if wanted in kwargs else str(next(iter(kwargs)))
        spec = kwargs[key]
        self._input_key = key
        self.input = TensorInfo(self.spec.inputs[0] if wanted == key else key, spec.dtype.name, _shape(spec.shape))
        by_plain = {_plain(n): n for n in self.spec.outputs}
        self._names = {k: by_plain.get(k, k) for k in self._fn.structured_outputs}
        self.outputs = [
            TensorInfo(self._names[k], v.dtype.name, _shape(v.shape)) for k, v in self._fn.structured_outputs.items()
        ]
        self._tf = tf

    def predict(self, batch: Batch) -> Outputs:
        feed: dict[str, Any] = {self._input_key: self._tf.constant(batch)}
        result = self._fn(**feed)
        return {self._names[k]: np.asarray(v) for k, v in result.items()}
