"""Request bodies and the complete request bytes, built once before the run.

* ``none``: no body.
* ``file:PATH``: the file's bytes on every request.
* ``dataset:DIR``: every image file of DIR preloaded into memory; each request picks one at random
  (the 2019 seed picked a random image on the server; kinfer moves the choice to the client).

``--protocol raw`` sends the bytes as they are (``Content-Type`` from the file name);
``--protocol v2`` wraps them in an Open Inference Protocol (KServe v2) JSON request with one BYTES
tensor, binary data base64-encoded as KServe's JSON convention for BYTES::

    {"inputs": [{"name": "<input name>", "shape": [1], "datatype": "BYTES", "data": ["<base64>"]}]}

``--batch-size N`` (v2 only) puts N images in that one tensor, shape ``[N]`` (seed 001's batch client):
body ``i`` of a dataset of M images carries images ``i, i+1, ..., i+N-1`` (mod M), so every image is
sent equally often.
"""

from __future__ import annotations

import base64
import json
import mimetypes
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"})


class PayloadError(ValueError):
    """The payload specification or its files are unusable (bad input)."""


class Protocol(StrEnum):
    """How a payload is put on the wire."""

    RAW = "raw"
    V2 = "v2"


@dataclass(frozen=True)
class PayloadSpec:
    """``none``, ``file:PATH`` or ``dataset:DIR`` as given on the command line."""

    kind: str
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> PayloadSpec:
        """Parse the ``--payload`` value; raise :class:`PayloadError` naming the problem."""
        if text == "none":
            return cls("none")
        kind, sep, path = text.partition(":")
        if not sep or kind not in ("file", "dataset") or not path:
            raise PayloadError(f"invalid --payload {text!r}: use none, file:PATH or dataset:DIR")
        return cls(kind, Path(path))


@dataclass(frozen=True)
class Body:
    """One request body and its content type."""

    data: bytes
    content_type: str


def load_bodies(spec: PayloadSpec, protocol: Protocol, input_name: str = "input", batch_size: int = 1) -> list[Body]:
    """Read the payload files into memory and encode them for ``protocol`` (empty list for ``none``);
    ``batch_size`` images per body (v2 only)."""
    if batch_size > 1 and protocol is not Protocol.V2:
        raise PayloadError(f"a batch of {batch_size} images per request needs --protocol v2")
    if spec.kind == "none":
        if protocol is Protocol.V2:
            raise PayloadError("--protocol v2 needs a payload (file:PATH or dataset:DIR)")
        return []
    assert spec.path is not None
    if spec.kind == "file":
        if not spec.path.is_file():
            raise PayloadError(f"payload file {str(spec.path)!r} does not exist")
        files = [spec.path]
    else:
        if not spec.path.is_dir():
            raise PayloadError(f"dataset directory {str(spec.path)!r} does not exist")
        files = sorted(p for p in spec.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise PayloadError(f"dataset directory {str(spec.path)!r} holds no images")
    if batch_size == 1:
        return [encode_body(p.read_bytes(), p.name, protocol, input_name) for p in files]
    images = [p.read_bytes() for p in files]
    return [
        encode_batch([images[(i + k) % len(images)] for k in range(batch_size)], input_name)
        for i in range(len(images))
    ]


def encode_batch(images: list[bytes], input_name: str = "input") -> Body:
    """A v2 request carrying ``images`` as one BYTES tensor of shape ``[len(images)]``."""
    request = {
        "inputs": [
            {
                "name": input_name,
                "shape": [len(images)],
                "datatype": "BYTES",
                "data": [base64.b64encode(data).decode("ascii") for data in images],
            }
        ]
    }
    return Body(json.dumps(request, separators=(",", ":")).encode(), "application/json")


def encode_body(data: bytes, filename: str, protocol: Protocol, input_name: str = "input") -> Body:
    """The body for one file under ``protocol``."""
    if protocol is Protocol.V2:
        return encode_batch([data], input_name)
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return Body(data, content_type)


def build_request(method: str, path: str, host_header: str, body: Body | None) -> bytes:
    """The complete HTTP/1.1 request, ready to write to a keep-alive connection."""
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host_header}",
        "User-Agent: kinfer-loadgen",
        "Accept: */*",
    ]
    if body is not None:
        lines.append(f"Content-Type: {body.content_type}")
        lines.append(f"Content-Length: {len(body.data)}")
    elif method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: 0")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (body.data if body is not None else b"")
