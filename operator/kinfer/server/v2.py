"""Open Inference Protocol v2 (KServe/Triton) request parsing and response encoding.

Two input forms are accepted: ``BYTES`` tensors whose elements are base64-encoded image files (the
convention of ``kinfer loadgen --protocol v2``), and numeric tensors already pre-processed in the
model's input shape and layout (``[N, H, W, 3]`` or ``[H, W, 3]`` for NHWC, ``[N, 3, H, W]`` or
``[3, H, W]`` for NCHW), e.g. a raw ``UINT8`` image for SSD-MobileNet.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
from numpy.typing import NDArray

from kinfer.server.backends.base import Outputs, TensorInfo
from kinfer.server.errors import InvalidInput, PayloadTooLarge

#: v2 datatype <-> numpy dtype.
DATATYPES: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
_NUMPY_TO_V2 = {v: k for k, v in DATATYPES.items()}


def v2_datatype(dtype: str) -> str:
    """The v2 name of a numpy dtype (``BYTES`` for anything non-numeric)."""
    return _NUMPY_TO_V2.get(str(np.dtype(dtype)), "BYTES")


def tensor_metadata(info: TensorInfo) -> dict[str, Any]:
    return {"name": info.name, "datatype": v2_datatype(info.dtype), "shape": list(info.shape)}


def parse_request(body: Any) -> tuple[dict[str, Any], list[str] | None]:
    """The first input tensor of an infer request and the requested output names (None = all)."""
    if not isinstance(body, dict):
        raise InvalidInput('body must be a JSON object {"inputs": [...]}')
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs or not isinstance(inputs[0], dict):
        raise InvalidInput('"inputs" must be a non-empty list of tensors')
    tensor: dict[str, Any] = inputs[0]
    wanted = body.get("outputs")
    names: list[str] | None = None
    if wanted is not None:
        if not isinstance(wanted, list) or not all(isinstance(o, dict) and "name" in o for o in wanted):
            raise InvalidInput('"outputs" must be a list of {"name": ...}')
        names = [str(o["name"]) for o in wanted]
    return tensor, names


def image_payloads(tensor: dict[str, Any], max_images: int | None = None) -> list[bytes]:
    """The image files in a ``BYTES`` tensor (base64 strings, possibly nested one level).

    More than ``max_images`` is 413, counted before anything is base64-decoded."""
    data = tensor.get("data")
    if isinstance(data, str):
        data = [data]
    if not isinstance(data, list) or not data:
        raise InvalidInput('BYTES input needs "data": ["<base64 image>", ...]')
    flat = [x for item in data for x in (item if isinstance(item, list) else [item])]
    if max_images is not None and len(flat) > max_images:
        raise PayloadTooLarge(
            f"{len(flat)} images in one request exceed the limit of {max_images} (--max-images-per-request)"
        )
    out = []
    for item in flat:
        if not isinstance(item, str):
            raise InvalidInput("BYTES data elements must be base64 strings")
        try:
            out.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"BYTES data is not valid base64: {exc}") from exc
    return out


def numeric_rows(tensor: dict[str, Any], expected: tuple[int, int, int], dtype: str) -> NDArray[np.generic]:
    """A numeric tensor as model input rows ``(N, *expected)`` of the model's dtype.

    ``expected`` is one row's shape in the model's layout, (H, W, 3) or (3, H, W); the tensor is taken
    as it is, never transposed.
    """
    datatype = str(tensor.get("datatype", "")).upper()
    if datatype not in DATATYPES:
        raise InvalidInput(f"unsupported datatype {datatype!r} (BYTES or one of {', '.join(DATATYPES)})")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput('"shape" must be a list of non-negative integers')
    try:
        arr = np.asarray(tensor.get("data"), dtype=DATATYPES[datatype]).reshape(shape)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(f"data does not fit shape {shape} as {datatype}: {exc}") from exc
    if arr.ndim == 3:
        arr = arr[np.newaxis]
    dims: tuple[int, ...] = tuple(map(int, np.shape(arr)))
    if len(dims) != 4 or dims[1:] != expected or dims[0] < 1:
        wanted = ", ".join(map(str, expected))
        raise InvalidInput(f"tensor shape {list(dims)} does not match the model input [N, {wanted}]")
    return arr.astype(dtype, copy=False)


def encode_outputs(outputs: Outputs, names: list[str] | None) -> list[dict[str, Any]]:
    """v2 output tensors, row-major flattened data, in the model's output order."""
    selected = list(outputs) if names is None else names
    missing = [n for n in selected if n not in outputs]
    if missing:
        raise InvalidInput(f"unknown output(s) {missing}; the model has {sorted(outputs)}")
    result = []
    for name in selected:
        arr = np.asarray(outputs[name])
        result.append(
            {
                "name": name,
                "datatype": v2_datatype(str(arr.dtype)),
                "shape": list(arr.shape),
                "data": arr.reshape(-1).tolist(),
            }
        )
    return result
