"""Freeze a ``tf.function`` into a TF1 GraphDef, export a SavedModel, convert a GraphDef to ONNX.

The frozen graph is what MLPerf's ``backend_tf.py`` loads (``tf.compat.v1.import_graph_def``); tensor
names come from the function's input spec names and ``tf.identity(..., name=...)`` on the outputs, so
a built model has the same interface as the MLPerf file it stands in for.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: ONNX opset for tf2onnx; 13 covers NonMaxSuppression and the SSD graphs' ops.
ONNX_OPSET = 13


def freeze(fn: Any) -> Any:
    """The frozen GraphDef (variables folded to constants) of a concrete ``tf.function``."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(fn)
    return frozen.graph.as_graph_def()


def write_graphdef(graph_def: Any, path: Path) -> None:
    path.write_bytes(graph_def.SerializeToString())


def read_graphdef(path: Path) -> Any:
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())
    return graph_def


def write_savedmodel(module: Any, fn: Any, path: Path) -> None:
    """Export ``module`` (a ``tf.Module`` tracking the variables) with ``fn`` as ``serving_default``."""
    import tensorflow as tf

    tf.saved_model.save(module, str(path), signatures={"serving_default": fn})


def to_onnx(graph_def: Any, inputs: tuple[str, ...], outputs: tuple[str, ...], path: Path) -> None:
    """Convert a frozen graph to ONNX with tf2onnx, keeping the TensorFlow tensor names."""
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    tf2onnx.convert.from_graph_def(
        graph_def,
        input_names=list(inputs),
        output_names=list(outputs),
        opset=ONNX_OPSET,
        output_path=str(path),
    )
