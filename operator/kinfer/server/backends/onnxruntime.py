"""ONNX Runtime backend: about twice TensorFlow's speed on small CPUs for the SSD graphs.

``onnxruntime`` is imported in ``load`` only. With a GPU the CUDA provider is used, capped at
``memory_fraction`` of the device's memory through its ``gpu_mem_limit`` option. ``run`` is
thread-safe, so gthread workers may call it concurrently when batching is off.

The runtime's thread pools do not spin while idle: by default they busy-wait after each run, and
with several gunicorn workers on few cores one worker's spinning threads steal the CPU another
worker is inferring on (in one run on 2 cores, 2 workers x 2 spinning runtime threads held a 100 ms
p99 up to 1 rps, 2 workers x 1 runtime thread up to 7 rps).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from kinfer.server import gpu
from kinfer.server.backends.base import Backend, Batch, Outputs, TensorInfo

log = logging.getLogger(__name__)

#: ONNX element types as numpy dtype names.
_ORT_TYPES = {
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(bool)": "bool",
}


def _info(arg: Any) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    return TensorInfo(arg.name, _ORT_TYPES.get(arg.type, "float32"), shape)


class OnnxRuntimeBackend(Backend):
    """An ``onnxruntime.InferenceSession`` on the CUDA provider when a GPU is visible, else CPU."""

    def _providers(self, ort: Any) -> list[Any]:
        gpus = gpu.visible_gpus()
        if not gpus or "CUDAExecutionProvider" not in ort.get_available_providers():
            return ["CPUExecutionProvider"]
        options: dict[str, Any] = {"device_id": 0}
        if self.options.memory_fraction is not None:
            options["gpu_mem_limit"] = int(gpus[0].total_bytes * self.options.memory_fraction)
            log.info("CUDA provider: gpu_mem_limit %d MiB", options["gpu_mem_limit"] // 2**20)
        return [("CUDAExecutionProvider", options), "CPUExecutionProvider"]

    def load(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if self.options.intra_op_threads:
            opts.intra_op_num_threads = self.options.intra_op_threads
        assert self.spec.path is not None
        self._session = ort.InferenceSession(self.spec.path, sess_options=opts, providers=self._providers(ort))
        inputs = {i.name: i for i in self._session.get_inputs()}
        wanted = self.spec.inputs[0] if self.spec.inputs else None
        self.input = _info(inputs[wanted] if wanted in inputs else next(iter(inputs.values())))
        available = {o.name: o for o in self._session.get_outputs()}
        names = [n for n in self.spec.outputs if n in available] or list(available)
        self.outputs = [_info(available[n]) for n in names]
        self._output_names = names
        log.info("onnxruntime providers: %s", self._session.get_providers())

    def predict(self, batch: Batch) -> Outputs:
        values = self._session.run(self._output_names, {self.input.name: batch})
        return {n: np.asarray(v) for n, v in zip(self._output_names, values, strict=True)}
