"""The benchmark's framework control: the least ``/predict`` that gunicorn + Flask can serve.

One gunicorn sync worker, one Flask route: read the body, decode it with the model server's own
``decode_image``, run the same ONNX model as ``kinfer serve`` (same session options), answer a tiny
JSON body with a ``Server-Timing`` header. No metrics, no readiness, no post-processing, no runtime
layers. ``bench_server.py`` runs it beside ``kinfer serve`` and ``floor_server.py``: the gap from the
bare socket floor to this is what gunicorn and Flask themselves cost per request on this machine; the
gap from this to kinfer is what kinfer's own features cost. Not a product component.

    python tests/perf/flask_floor_server.py --model /tmp/kinfer-bench/ssd-mobilenet
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from flask import Flask, Response, request
from gunicorn.app.base import BaseApplication

from kinfer.server.preprocess import decode_image


def create_app(model: Path) -> Flask:
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: np.zeros((1, 300, 300, 3), np.uint8)})  # warm up
    app = Flask(__name__)

    @app.post("/predict")
    def predict() -> Response:
        t0 = time.perf_counter()
        image = decode_image(request.get_data())
        t1 = time.perf_counter()
        outputs = session.run(None, {name: image[np.newaxis]})
        t2 = time.perf_counter()
        response = Response(json.dumps({"detections": int(outputs[0][0])}), mimetype="application/json")
        response.headers["Server-Timing"] = f"preprocess;dur={(t1 - t0) * 1e3:.2f}, infer;dur={(t2 - t1) * 1e3:.2f}"
        return response

    return app


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, model: Path, port: int) -> None:
        self.model, self.port = model, port
        super().__init__()

    def load_config(self) -> None:
        def ready(server: Any) -> None:
            port = server.LISTENERS[0].sock.getsockname()[1]
            print(f"listening on http://127.0.0.1:{port}", file=sys.stderr, flush=True)

        options = {"bind": f"127.0.0.1:{self.port}", "workers": 1, "worker_class": "sync", "accesslog": None,
                   "loglevel": "warning", "when_ready": ready}  # fmt: skip
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return create_app(self.model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="directory holding model.onnx")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    _Gunicorn(args.model, args.port).run()


if __name__ == "__main__":
    main()
