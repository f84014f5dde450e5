"""The work every model-server peer does per request, the same in each: kinfer's own decoder
(``kinfer.server.preprocess.decode_image``, libjpeg-turbo), its pre-processing for the model
(``preprocess``, from model.json) and one ONNX Runtime call with the session options kinfer's ONNX backend
sets (no spinning, ``intra_op_num_threads`` 1: one runtime thread per worker process, as kinfer's best
configuration in bench_server.py). The answer: the person boxes scoring >= 0.5.

Imported by each peer's adapter (tests/perf/peers/*_app.py) from the peer's own virtualenv, with
``operator/`` on PYTHONPATH; the model directory comes from ``KINFER_PEER_MODEL``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from kinfer.server.preprocess import decode_image, preprocess

#: ``KINFER_PEER_NULL=1``: decode and pre-process as always, skip the ONNX Runtime call (bench_peer_servers.py's
#: null block, beside ``kinfer serve --format null``)
NULL_MODEL = os.environ.get("KINFER_PEER_NULL") == "1"


class Detector:
    def __init__(self, model: str | Path | None = None) -> None:
        self.dir = Path(model or os.environ["KINFER_PEER_MODEL"])
        self.meta = json.loads((self.dir / "model.json").read_text())
        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.size = tuple(self.meta["inputSize"])
        first = sorted((self.dir / "dataset").glob("*.jpg"))[0]
        self(first.read_bytes())  # warm up

    def row(self, jpeg: bytes) -> Any:
        image = decode_image(jpeg)
        return preprocess(image, self.meta["preprocess"], self.size, self.meta["inputDtype"])[np.newaxis]

    def run(self, row: Any) -> dict[str, Any]:
        if NULL_MODEL:  # the model call left out, as kinfer's ``--format null``: what the server itself costs
            return {"persons": [{"box": [0.25, 0.25, 0.75, 0.75], "score": 0.9}]}
        num, boxes, scores, _classes = self.session.run(None, {self.input: row})
        keep = [i for i in range(int(num[0])) if scores[0][i] >= 0.5]
        return {"persons": [{"box": [round(float(v), 4) for v in boxes[0][i]], "score": round(float(scores[0][i]), 4)}
                            for i in keep]}  # fmt: skip

    def __call__(self, jpeg: bytes) -> dict[str, Any]:
        return self.run(self.row(jpeg))
