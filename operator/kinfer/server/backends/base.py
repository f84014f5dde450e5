"""The backend interface every plug-in implements (MLPerf's ``backend.py``, KServe's ``Model``)."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from kinfer.server.modelspec import ModelSpec

Batch = NDArray[np.generic]
Outputs = dict[str, NDArray[np.generic]]


@dataclass(frozen=True)
class TensorInfo:
    """A model tensor as the v2 metadata endpoint describes it (-1 = any size)."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class BackendOptions:
    """Settings that are about the process, not the model."""

    #: per-process GPU memory cap as a fraction of each visible device (None: framework default).
    memory_fraction: float | None = None
    #: null backend: mean delay per batch in milliseconds and its distribution.
    delay_ms: float = 0.0
    delay_distribution: str = "fixed"
    #: intra-op threads for the runtime; 0 = the runtime's default (best on small machines).
    intra_op_threads: int = 0


class Backend(abc.ABC):
    """One model loaded in one process. ``predict`` must be safe to call from several threads."""

    def __init__(self, spec: ModelSpec, options: BackendOptions) -> None:
        self.spec = spec
        self.options = options
        self.input: TensorInfo = TensorInfo(
            spec.inputs[0] if spec.inputs else "input", spec.input_dtype or "uint8", (-1, *spec.row_shape)
        )
        self.outputs: list[TensorInfo] = []

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model (in the worker, after fork) and fill in ``input`` and ``outputs``."""

    @abc.abstractmethod
    def predict(self, batch: Batch) -> Outputs:
        """Run a batch of the input dtype in the spec's layout, (N, H, W, 3) or (N, 3, H, W).

        Returns output name -> array with N rows.
        """

    @property
    def input_dtype(self) -> str:
        """The dtype the model wants: after ``load`` the graph's own, else the spec's (or uint8)."""
        return self.input.dtype
